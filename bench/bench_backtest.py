"""Backtest throughput end to end (load + compute + report) on the 90-day BTC file, candles/s.

Usage: python bench/bench_backtest.py [path-to-candles.csv.gz]
Prints the time of each phase and peak resident memory.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinpilot.backtest.report import write_outputs
from coinpilot.backtest.run import run_backtest, split_window
from coinpilot.candle_files import load_candles

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTC_USDT-1m-20250520-20250818.csv.gz"


async def main(path: Path) -> None:
    t0 = time.perf_counter()
    candles = load_candles([path])
    t1 = time.perf_counter()
    window = split_window(candles, None, None)
    result, report = await run_backtest(window, label=path.name)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_outputs([report], Path(out))
    t3 = time.perf_counter()
    n = len(candles)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"backtest of {path.name}: {n:,} candles "
        f"({len(window.warmup):,} warm-up, {len(window.trade):,} traded)"
    )
    print(f"  load    {t1 - t0:6.2f} s")
    print(f"  compute {t2 - t1:6.2f} s   ({len(result.fills)} fills, {result.counters.proposals} AI reviews)")
    print(f"  report  {t3 - t2:6.2f} s")
    print(
        f"  total   {t3 - t0:6.2f} s   = {n / (t3 - t0):,.0f} candles/s end to end; "
        f"peak RSS {peak_mb:,.0f} MiB"
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
