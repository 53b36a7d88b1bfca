"""The indicator's only SQL and Redis: history to warm a symbol, ``regime_history``, the regime key.

``market_data`` is read only (the collector owns it); ``regime_history`` rows are idempotent on
``(run_id, symbol, as_of)``; ``market:regime:<SYM>`` is a cache: when Redis is down the write is
skipped and counted, because the regime also travels on NATS and in ``regime_history``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.cache import Cache, keys
from coinpilot.contracts import HourlyCandle, MinuteCandle, RegimeUpdate
from coinpilot.db import Database, MarketData
from coinpilot.db.market import CandleRow, load_hourly_candles, minute_candle
from coinpilot.errors import TransientError
from services.indicator import metrics

log = logging.getLogger("coinpilot.indicator")


async def _recent_candles(
    session: AsyncSession, symbol: str, before: datetime, limit: int
) -> list[MinuteCandle]:
    m = MarketData.__table__.c
    statement = (
        select(
            m.symbol,
            m.interval,
            m.timestamp,
            m.open_price,
            m.high_price,
            m.low_price,
            m.close_price,
            m.volume,
        )
        .where(m.symbol == symbol, m.interval == "1m", m.timestamp < before)
        .order_by(m.timestamp.desc())
        .limit(limit)
    )
    rows = [CandleRow(*row) for row in (await session.execute(statement)).all()]
    return [minute_candle(row) for row in reversed(rows)]


async def _has_rows_before(session: AsyncSession, symbol: str, before: datetime) -> bool:
    m = MarketData.__table__.c
    statement = (
        select(m.timestamp).where(m.symbol == symbol, m.interval == "1m", m.timestamp < before).limit(1)
    )
    return (await session.execute(statement)).first() is not None


async def has_candles_between(db: Database, symbol: str, after: datetime, before: datetime) -> bool:
    """True when ``market_data`` holds a 1m candle opened strictly between the two times."""
    m = MarketData.__table__.c
    statement = (
        select(m.timestamp)
        .where(m.symbol == symbol, m.interval == "1m", m.timestamp > after, m.timestamp < before)
        .limit(1)
    )
    async with db.session() as session:
        return (await session.execute(statement)).first() is not None


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


# Rows in the order given (ids ascending as before); a repeat of (run, symbol, hour) writes nothing.
_SAVE_REGIMES = """
INSERT INTO regime_history
    (run_id, symbol, as_of, regime, ma50, ma200, diff_pct, hourly_count, detected_at)
SELECT run_id, symbol, as_of, regime, ma50, ma200, diff_pct, hourly_count, detected_at
FROM unnest($1::varchar[], $2::varchar[], $3::timestamptz[], $4::varchar[], $5::numeric[],
            $6::numeric[], $7::numeric[], $8::integer[], $9::timestamptz[])
     WITH ORDINALITY AS batch (run_id, symbol, as_of, regime, ma50, ma200, diff_pct, hourly_count,
                               detected_at, seq)
ORDER BY seq
ON CONFLICT ON CONSTRAINT uq_regime_history_run_symbol_as_of DO NOTHING
"""


async def save_regimes(db: Database, run_id: str, updates: Sequence[RegimeUpdate]) -> None:
    """One ``regime_history`` row per symbol and closed hour; a repeat writes nothing.

    Plain SQL on the driver: the ORM compiles a multi-row ``VALUES`` statement again on every
    call, milliseconds on the hour-closing candle's path.
    """
    if not updates:
        return
    rows = [
        (
            run_id,
            u.symbol,
            u.as_of,
            u.regime.value,
            _decimal(u.ma50),
            _decimal(u.ma200),
            None if u.diff_pct is None else Decimal(repr(u.diff_pct)).quantize(Decimal("0.0001")),
            u.hourly_count,
            u.ts_event,
        )
        for u in updates
    ]
    async with db.transaction() as conn:
        await conn.execute(_SAVE_REGIMES, *(list(column) for column in zip(*rows, strict=True)))


async def cache_regime(cache: Cache | None, run_id: str, update: RegimeUpdate, ttl_seconds: int) -> bool:
    """SET ``market:regime:<SYM>`` (replays under ``run:<id>:``); False when Redis was unavailable."""
    if cache is None:
        return False
    try:
        await cache.set(keys.market_regime(update.symbol, run_id), update.regime.value, ttl=ttl_seconds)
    except TransientError as exc:
        metrics.REGIME_CACHE_FAILURES.inc()
        log.warning("regime of %s not cached (redis unavailable): %s", update.symbol, exc)
        return False
    return True


class MarketDataStore:
    """``stores.IndicatorStore`` on PostgreSQL (``market_data`` read only, ``regime_history``) and
    Redis (the regime key)."""

    def __init__(self, db: Database, cache: Cache | None) -> None:
        self.db = db
        self.cache = cache

    async def recent_candles(self, symbol: str, before: datetime, limit: int) -> list[MinuteCandle]:
        async with self.db.session() as session:
            return await _recent_candles(session, symbol, before, limit)

    async def hourly_candles(self, symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
        async with self.db.session() as session:
            return await load_hourly_candles(session, symbol, start, end)

    async def has_candles_before(self, symbol: str, before: datetime) -> bool:
        async with self.db.session() as session:
            return await _has_rows_before(session, symbol, before)

    async def has_candles_between(self, symbol: str, after: datetime, before: datetime) -> bool:
        return await has_candles_between(self.db, symbol, after, before)

    async def save_regimes(self, run_id: str, updates: Sequence[RegimeUpdate]) -> None:
        await save_regimes(self.db, run_id, updates)

    async def cache_regime(self, run_id: str, update: RegimeUpdate, ttl_seconds: int) -> bool:
        return await cache_regime(self.cache, run_id, update, ttl_seconds)
