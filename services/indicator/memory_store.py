"""The indicator's store in memory (the backtest's live path): ``stores.IndicatorStore`` over the
candles the run has recorded so far, per symbol in time order (what ``market_data`` would hold)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from datetime import datetime

from coinpilot.contracts import HourlyCandle, MinuteCandle, RegimeUpdate
from services.indicator.core import hourly_buckets

#: ``symbol -> its recorded 1m candles, oldest first``.
CandlesOf = Callable[[str], Sequence[MinuteCandle]]


class MemoryIndicatorStore:
    def __init__(self, candles_of: CandlesOf) -> None:
        self.candles_of = candles_of
        self.regimes: dict[tuple[str, str, datetime], RegimeUpdate] = {}  # (run, symbol, as_of)

    def _index(self, symbol: str, at: datetime) -> tuple[Sequence[MinuteCandle], int]:
        """The symbol's candles and how many opened before ``at``."""
        candles = self.candles_of(symbol)
        return candles, bisect.bisect_left(candles, at, key=lambda c: c.ts_open)

    async def recent_candles(self, symbol: str, before: datetime, limit: int) -> list[MinuteCandle]:
        candles, n = self._index(symbol, before)
        return list(candles[max(0, n - limit) : n])

    async def hourly_candles(self, symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
        candles, lo = self._index(symbol, start)
        _, hi = self._index(symbol, end)
        return hourly_buckets(candles[lo:hi])

    async def has_candles_before(self, symbol: str, before: datetime) -> bool:
        return self._index(symbol, before)[1] > 0

    async def has_candles_between(self, symbol: str, after: datetime, before: datetime) -> bool:
        candles, lo = self._index(symbol, after)
        if lo < len(candles) and candles[lo].ts_open == after:
            lo += 1
        _, hi = self._index(symbol, before)
        return hi > lo

    async def save_regimes(self, run_id: str, updates: Sequence[RegimeUpdate]) -> None:
        for u in updates:
            self.regimes.setdefault((run_id, u.symbol, u.as_of), u)

    async def cache_regime(self, run_id: str, update: RegimeUpdate, ttl_seconds: int) -> bool:
        return True
