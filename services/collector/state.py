"""The collector's only SQL: it owns ``market_data`` (idempotent on ``(symbol, interval, timestamp)``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select

from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, MarketData
from coinpilot.db.market import CandleRow, Recorded, copy_candles, insert_candles
from services.collector.core import StoredRange


async def stored_range(db: Database, symbol: str) -> StoredRange:
    """Oldest and newest stored 1m candle of ``symbol``."""
    m = MarketData.__table__.c
    statement = select(func.min(m.timestamp), func.max(m.timestamp)).where(
        m.symbol == symbol, m.interval == "1m"
    )
    async with db.session() as session:
        first, last = (await session.execute(statement)).one()
    return StoredRange(first, last)


async def store_candles(db: Database, candles: Iterable[MinuteCandle | CandleRow]) -> int:
    """Bulk upsert (COPY + merge, one transaction); returns the rows inserted or corrected."""
    return await copy_candles(db, candles)


async def record_candles(db: Database, candles: Sequence[MinuteCandle]) -> Recorded:
    """Insert a run of candles in one statement; a stored minute is never changed: a candle with
    other values for it is returned as a conflict (and nothing of the run is kept)."""
    return await insert_candles(db, candles)
