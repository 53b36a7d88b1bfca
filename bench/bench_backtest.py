"""Backtest throughput end to end (load + compute + report) on the 90-day BTC file, candles/s.

Usage: python bench/bench_backtest.py [--path fast|batch|live] [path-to-candles.csv.gz ...]
Prints the time of each phase, peak resident memory, and the whole process's wall time (Python
start-up and imports included). ``fast`` (the default, what ``coinpilot backtest`` runs) reads the
file as columns; ``batch``/``live`` are the reference paths that run the core on every candle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinpilot.backtest.report import write_outputs
from coinpilot.backtest.run import DEFAULT_WARMUP, run_backtest, split_window
from coinpilot.backtest.series import load_series, series_window
from coinpilot.candle_files import load_candles

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTC_USDT-1m-20250520-20250818.csv.gz"


def process_seconds() -> float:
    """Wall time since this process started (Linux /proc; 10 ms resolution)."""
    with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
        started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK")


async def main(paths: list[Path], path: str) -> None:
    t0 = time.perf_counter()
    if path == "fast":
        window = series_window(load_series(paths), None, DEFAULT_WARMUP)
        n, warm, traded = window.traded() + window.warmup(), window.warmup(), window.traded()
    else:
        candles = load_candles(paths)
        window = split_window(candles, None, None)
        n, warm, traded = len(candles), len(window.warmup), len(window.trade)
    t1 = time.perf_counter()
    result, report = await run_backtest(window, label=paths[0].name, path=path)  # type: ignore[arg-type]
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_outputs([report], Path(out))
    t3 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    names = ", ".join(p.name for p in paths)
    print(f"backtest ({path} path) of {names}: {n:,} candles ({warm:,} warm-up, {traded:,} traded)")
    print(f"  load    {t1 - t0:6.2f} s")
    print(f"  compute {t2 - t1:6.2f} s   ({len(result.fills)} fills, {result.counters.proposals} AI reviews)")
    print(f"  report  {t3 - t2:6.2f} s")
    print(
        f"  total   {t3 - t0:6.2f} s   = {n / (t3 - t0):,.0f} candles/s end to end; "
        f"peak RSS {peak_mb:,.0f} MiB"
    )
    wall = process_seconds()
    print(f"  process {wall:6.2f} s   = {n / wall:,.0f} candles/s including Python start-up and imports")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--path", choices=("fast", "batch", "live"), default="fast")
    args = parser.parse_args()
    asyncio.run(main(args.files, args.path))
