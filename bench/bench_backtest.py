"""Backtest throughput end to end (load + compute + report) on the 90-day BTC file, candles/s.

Usage: python bench/bench_backtest.py [--runs N] [--path fast|batch|live] [path-to-candles.csv.gz ...]
First the command a user runs, ``coinpilot backtest --data FILE``, timed by a stopwatch from
process start to exit (Python start-up, imports, load, compute, report and chart all included)
``--runs`` times; then one run in this process with the time of each phase and peak resident
memory. ``fast`` (the default, what ``coinpilot backtest`` runs) reads the file as columns;
``batch``/``live`` are the reference paths that run the core on every candle (in process only).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.backtest.report import write_outputs
from apps.backtest.run import DEFAULT_WARMUP, run_backtest, split_window
from apps.backtest.series import load_series, series_window
from coinpilot.candle_files import load_candles

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTC_USDT-1m-20250520-20250818.csv.gz"


def time_the_command(paths: list[Path], runs: int) -> None:
    """Wall time of ``coinpilot backtest`` over ``paths``, from process start to exit."""
    if runs <= 0:
        return
    n = sum(len(s) for s in load_series(paths).values())
    command = [sys.executable, "-m", "apps.cli.main", "backtest"]
    command += [arg for p in paths for arg in ("--data", str(p))]
    walls = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([*command, "--out", out], check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - started)
    low, mid, high = min(walls), statistics.median(walls), max(walls)
    print(f"coinpilot backtest, {runs} runs of {n:,} candles, wall time from process start to exit:")
    print(
        f"  best {low:.2f} s, median {mid:.2f} s, worst {high:.2f} s = {n / low:,.0f} / {n / mid:,.0f} / "
        f"{n / high:,.0f} candles/s end to end"
    )


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
    print(f"in process, {path} path, {names}: {n:,} candles ({warm:,} warm-up, {traded:,} traded)")
    print(f"  load    {t1 - t0:6.2f} s")
    print(f"  compute {t2 - t1:6.2f} s   ({len(result.fills)} fills, {result.counters.proposals} AI reviews)")
    print(f"  report  {t3 - t2:6.2f} s")
    print(
        f"  total   {t3 - t0:6.2f} s   = {n / (t3 - t0):,.0f} candles/s end to end; "
        f"peak RSS {peak_mb:,.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--path", choices=("fast", "batch", "live"), default="fast")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of the command (0: none)")
    args = parser.parse_args()
    if args.path == "fast":
        time_the_command(args.files, args.runs)
    asyncio.run(main(args.files, args.path))
