"""The indicator's store, as an interface, and the warm-up read written once over it.

The candle handler (``handlers.CandleHandler``) reads ``market_data`` to warm a symbol and to
notice a gap a backfill filled, and writes each closed hour's regime (``regime_history`` and the
``market:regime`` cache key). ``state.MarketDataStore`` does it on PostgreSQL and Redis,
``memory_store.MemoryIndicatorStore`` over candles in memory (a run in one process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from coinpilot.clock import floor_hour
from coinpilot.contracts import HourlyCandle, MinuteCandle, RegimeUpdate
from services.indicator.core import IndicatorConfig

ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class WarmingCandles:
    """What ``core.warm_state`` needs: the last window of 1m candles and the hourly buckets."""

    recent: list[MinuteCandle]
    hours: list[HourlyCandle]


class IndicatorStore(Protocol):
    async def recent_candles(self, symbol: str, before: datetime, limit: int) -> list[MinuteCandle]:
        """The last ``limit`` 1m candles opened strictly before ``before``, oldest first."""
        ...

    async def hourly_candles(self, symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
        """Every hour with a 1m candle opened in ``[start, end)``, complete or not, in order."""
        ...

    async def has_candles_before(self, symbol: str, before: datetime) -> bool: ...

    async def has_candles_between(self, symbol: str, after: datetime, before: datetime) -> bool:
        """True when a 1m candle opened strictly between the two times is stored."""
        ...

    async def save_regimes(self, run_id: str, updates: Sequence[RegimeUpdate]) -> None:
        """One row per symbol and closed hour; a repeat writes nothing."""
        ...

    async def cache_regime(self, run_id: str, update: RegimeUpdate, ttl_seconds: int) -> bool:
        """The regime cache key; False when the cache was unavailable (the write is skipped)."""
        ...


async def load_history(
    store: IndicatorStore, symbol: str, before: datetime, config: IndicatorConfig
) -> WarmingCandles:
    """Stored 1m candles strictly before ``before``: the last ``config.window`` of them, and every
    hourly bucket back to ``hours_kept`` closed hours (further back when hours are empty)."""
    needed = config.rule.hours_kept + 1
    span = timedelta(hours=needed + 1)
    recent = await store.recent_candles(symbol, before, config.window)
    if not recent:
        return WarmingCandles([], [])
    end = recent[-1].ts_open + ONE_MINUTE
    while True:
        start = floor_hour(end) - span
        hours = await store.hourly_candles(symbol, start, end)
        if len(hours) >= needed or not await store.has_candles_before(symbol, start):
            return WarmingCandles(recent, hours)
        span *= 2
