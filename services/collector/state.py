"""The collector's only SQL: it owns ``market_data`` (idempotent on ``(symbol, interval, timestamp)``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select

from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, MarketData
from coinpilot.db.market import CandleRow, copy_candles, upsert_candle
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


async def record_candle(db: Database, candle: MinuteCandle) -> bool:
    """Upsert one candle; True when a row was inserted or corrected, False when it was there already."""
    async with db.session() as session:
        return await upsert_candle(session, candle)
