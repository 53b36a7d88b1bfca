"""``coinpilot import <file|dir> [--publish]``: candle files (shared/data format) into ``market_data``.

Rows go in through the bulk path (``coinpilot.db.market.copy_candles``: COPY into a temp table,
then an idempotent merge), in chunks of ``CHUNK_ROWS`` written by ``WRITERS`` concurrent
transactions while the next chunk is parsed in a worker thread (text -> ``Decimal``, exact). Every
chunk is idempotent, so an interrupted import is completed by running it again, and a re-import
writes nothing. File pairs
``BTC/USDT`` become Upbit-style markets ``USDT-BTC``. With a bus, every candle is also published on
``candles.1m.<SYM>`` in time order (deduplicated by ``Nats-Msg-Id``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl

from coinpilot.bus import LIVE_RUN, Bus, ensure_streams
from coinpilot.bus.connect import connect
from coinpilot.candle_files import candle_paths, frame_to_candles, read_frame
from coinpilot.db import Database
from coinpilot.db.market import CandleRow, copy_candles
from coinpilot.settings import CommonSettings

PUBLISH_CHUNK = 256
CHUNK_ROWS = 10_000
WRITERS = 3


@dataclass(frozen=True, slots=True)
class ImportResult:
    files: int = 0
    rows: int = 0
    written: int = 0
    published: int = 0


def frame_rows(frame: pl.DataFrame) -> list[CandleRow]:
    """``market_data`` rows of a candle frame (prices parsed from text straight to ``Decimal``)."""
    return [
        CandleRow(
            market,
            "1m",
            datetime.fromtimestamp(ts / 1000, UTC),
            Decimal(o),
            Decimal(h),
            Decimal(lo),
            Decimal(c),
            Decimal(v),
        )
        for market, ts, o, h, lo, c, v in frame.select(
            "market", "ts", "open", "high", "low", "close", "volume"
        ).iter_rows()
    ]


def file_rows(path: Path) -> list[CandleRow]:
    """One candle file as ``market_data`` rows."""
    return frame_rows(read_frame(path))


async def write_file(db: Database, path: Path) -> tuple[int, int]:
    """(rows read, rows written) of one file: parse chunk k+1 while chunks k, k-1.. are written."""
    frame = await asyncio.to_thread(read_frame, path)
    queue: asyncio.Queue[list[CandleRow] | None] = asyncio.Queue(maxsize=WRITERS)
    written = [0] * WRITERS

    async def parse() -> None:
        for start in range(0, frame.height, CHUNK_ROWS):
            await queue.put(await asyncio.to_thread(frame_rows, frame.slice(start, CHUNK_ROWS)))
        for _ in range(WRITERS):
            await queue.put(None)

    async def write(slot: int) -> None:
        while (rows := await queue.get()) is not None:
            written[slot] += await copy_candles(db, rows)

    async with asyncio.TaskGroup() as group:
        group.create_task(parse())
        for slot in range(WRITERS):
            group.create_task(write(slot))
    return frame.height, sum(written)


async def publish_file(bus: Bus, path: Path, run_id: str = LIVE_RUN) -> int:
    """Publish a file's candles in time order: the first alone, then pipelined in order."""
    candles = list(frame_to_candles(read_frame(path)))
    if not candles:
        return 0
    await bus.publish(candles[0], run_id=run_id)
    for i in range(1, len(candles), PUBLISH_CHUNK):
        chunk = candles[i : i + PUBLISH_CHUNK]
        await asyncio.gather(*(bus.publish(c, run_id=run_id) for c in chunk))
    return len(candles)


async def import_files(paths: Sequence[Path], db: Database, bus: Bus | None = None) -> ImportResult:
    """Import every candle file under ``paths``; publish each candle too when ``bus`` is given."""
    files = rows = written = published = 0
    for path in candle_paths(paths):
        read, stored = await write_file(db, path)
        files += 1
        rows += read
        written += stored
        if bus is not None:
            published += await publish_file(bus, path)
    return ImportResult(files, rows, written, published)


async def run_import(settings: CommonSettings, paths: Sequence[Path], *, publish: bool) -> int:
    """The CLI entry: connect to what ``settings`` names, import, return the rows written."""
    if settings.database_url is None:
        raise ValueError("COINPILOT_DATABASE_URL is not set")
    db = Database(settings.database_url.get_secret_value())
    nc = None
    try:
        bus = None
        if publish:
            nc = await connect(settings, "coinpilot-import")
            js = nc.jetstream()
            await ensure_streams(js, replicas=settings.stream_replicas)
            bus = Bus(js, "collector")
        result = await import_files(paths, db, bus)
    finally:
        if nc is not None:
            await nc.drain()
        await db.dispose()
    return result.written
