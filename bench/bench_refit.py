"""What the risk service's first GARCH refit does to the handlers running beside it.

Risk fits in a worker thread (``asyncio.to_thread``). Each mode runs in a fresh interpreter:
  lazy    ``arch`` imported by the first fit, in that thread (risk before it called ``load_garch``)
  loaded  ``load_garch()`` first, as risk's start hook now does; then the same fit
A stand-in handler (8 round trips to PostgreSQL, like a risk entry; one every 2 ms) runs alone for
0.5 s, then while the refit runs (one fit on the 90-day BTC file's 2,160 hourly closes). Prints the
handler's wall time alone and during the refit, and the refit's own time. Asserts nothing.
Usage: python bench/bench_refit.py [--database-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinpilot.analytics.volatility import fit_volatility, load_garch
from coinpilot.candle_files import load_candles

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "BTC_USDT-1m-20250520-20250818.csv.gz"
ROUND_TRIPS = 8


def hourly_closes(path: Path) -> list[float]:
    """The close of each hour's last minute, oldest first."""
    closes: dict[datetime, float] = {}
    for c in load_candles([path]):
        closes[c.ts_open.replace(minute=0)] = float(c.close)
    return [closes[hour] for hour in sorted(closes)]


async def handler(conn: asyncpg.Connection) -> float:
    started = time.perf_counter()
    for i in range(ROUND_TRIPS):
        await conn.fetchval("SELECT $1::int", i)
    return (time.perf_counter() - started) * 1000


async def handle_until(conn: asyncpg.Connection, done: asyncio.Event, out: list[float]) -> None:
    while not done.is_set():
        out.append(await handler(conn))
        await asyncio.sleep(0.002)


async def child(mode: str, url: str) -> None:
    closes = hourly_closes(DATA)[-2160:]
    if mode == "loaded":
        load_garch()
    conn = await asyncpg.connect(url)
    alone: list[float] = []
    during: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(handle_until(conn, stop, alone))
    await asyncio.sleep(0.5)
    stop.set()
    await task
    stop = asyncio.Event()
    task = asyncio.create_task(handle_until(conn, stop, during))
    started = time.perf_counter()
    await asyncio.to_thread(
        fit_volatility, "BTC", closes, datetime(2025, 8, 18, tzinfo=UTC), threshold_pct=1.0, min_returns=500
    )
    refit_ms = (time.perf_counter() - started) * 1000
    stop.set()
    await task
    await conn.close()
    print(
        f"  {mode:<7} refit {refit_ms:7.0f} ms | handler alone p50 {_p(alone, 50):5.1f} ms | during the"
        f" refit p50 {_p(during, 50):5.1f}  p90 {_p(during, 90):5.1f}  max {max(during):5.1f} ms"
        f"  ({len(during)} handlers)"
    )


def _p(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--child", choices=("lazy", "loaded"))
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.database_url))
        return
    print(f"risk handler ({ROUND_TRIPS} PostgreSQL round trips) beside the first GARCH refit")
    for mode in ("lazy", "loaded", "lazy", "loaded"):
        argv = [sys.executable, __file__, "--child", mode, "--database-url", args.database_url]
        subprocess.run(argv, check=True)


if __name__ == "__main__":
    main()
