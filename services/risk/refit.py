"""The GARCH refit policy (BEHAVIOUR §4.9), written once for the service and the backtest.

Each hourly candle notes its close as the symbol's latest price, adds it to the symbol's window
of the last ``window_hours + 1`` closes (a redelivered hour replaces its entry), and refits once
a day, on the first candle at or after ``refit_at_utc``, from the window's closed hours, once
``min_returns`` returns exist. A fit that fails drops the symbol's state: its multiplier falls
back to 1.0 until the next good fit.

A window need not wait weeks for hours on the bus: before the first hour of a (run, symbol) the
caller hands :func:`on_hourly_close` the symbol's recorded closed hours before it (``market_data``
in the service, the candles before the window in a backtest; :func:`history_span` says which), and
they seed the window first (:func:`seed_window`), so the first refit fits on recorded history.

The store is risk's cache (:class:`VolatilityStore`: Redis in the service, memory in a backtest)
and the fit is given (in a thread in the service; in line, or made ahead by a worker process, in a
backtest), so every mode runs this one function. What a refit did comes back as a
:class:`Refit` for the caller's metrics, logs and alert.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from coinpilot.analytics.volatility import VolatilityFitError, VolatilityState
from coinpilot.contracts import RiskAlert
from coinpilot.strategy_config import VolatilityConfig
from services.risk.core import VolatilityReading, refit_due, volatility_alert

HOUR = timedelta(hours=1)
Window = list[tuple[datetime, Decimal]]
#: ``(symbol, start, end)`` -> the recorded closed hours opened in ``[start, end)``, oldest first.
RecordedHours = Callable[[str, datetime, datetime], Awaitable[Window]]
#: Fits ``(symbol, closes, as_of)``; raises :class:`VolatilityFitError` when the model cannot be fitted.
Fit = Callable[[str, list[Decimal], datetime], Awaitable[VolatilityState]]


class VolatilityStore(Protocol):
    """What the refit reads and writes (``state.RiskCache`` on Redis, ``stores.MemoryRiskCache``)."""

    async def note_price(self, run_id: str, symbol: str, price: Decimal, at: datetime) -> None: ...

    async def volatility(self, run_id: str, symbol: str) -> VolatilityReading: ...

    async def keep_volatility(self, run_id: str, state: VolatilityState) -> bool: ...

    async def drop_volatility(self, run_id: str, symbol: str) -> None: ...

    async def add_hourly_close(
        self, run_id: str, symbol: str, ts_open: datetime, close: Decimal, keep: int
    ) -> bool: ...

    async def add_hourly_closes(self, run_id: str, symbol: str, hours: Window, keep: int) -> bool:
        """:meth:`add_hourly_close` of each hour in order, in one write."""
        ...

    async def hourly_closes(self, run_id: str, symbol: str) -> Window | None: ...


class RefitResult(StrEnum):
    NOT_DUE = "not_due"
    UNAVAILABLE = "unavailable"  # no cache configured: nothing to fit from (the multiplier stays 1.0)
    INSUFFICIENT = "insufficient"
    FAILED = "failed"
    FITTED = "fitted"


@dataclass(frozen=True, slots=True)
class Refit:
    result: RefitResult
    before: VolatilityState | None = None
    after: VolatilityState | None = None
    error: str | None = None

    def alert(self, now: datetime) -> RiskAlert | None:
        """The WARNING of a symbol whose fit turned high, if this refit did that."""
        if self.result is not RefitResult.FITTED or self.after is None:
            return None
        return volatility_alert(self.before, self.after, now)


def window_with(window: Window, ts_open: datetime, close: Decimal, keep: int) -> Window:
    """The window after adding an hour (what the Redis sorted set does with ZREM/ZADD/ZREMRANGEBYRANK):
    in time order, an hour already present replaced, only the last ``keep`` hours kept."""
    if window and window[-1][0] >= ts_open:
        window = sorted([w for w in window if w[0] != ts_open] + [(ts_open, close)])
    else:
        window = [*window, (ts_open, close)]
    return window[-keep:]


def windows_with(window: Window, hours: Window, keep: int) -> Window:
    """:func:`window_with` of each hour in turn (``hours`` oldest first), in one pass."""
    merged = dict(window)
    merged.update(hours)
    return sorted(merged.items())[-keep:]


def history_span(first_hour: datetime, config: VolatilityConfig) -> tuple[datetime, datetime]:
    """The recorded hours that seed the window of a symbol whose first hour here opens at
    ``first_hour``: the ``window_hours`` before it, so with it the window is full."""
    return first_hour - config.window_hours * HOUR, first_hour


async def seed_window(
    store: VolatilityStore, run_id: str, symbol: str, recorded: Window, config: VolatilityConfig
) -> None:
    """Add recorded closed hours (oldest first) to the symbol's window, as the bus would have."""
    if recorded:
        await store.add_hourly_closes(run_id, symbol, recorded, config.window_hours + 1)


async def refit_if_due(
    store: VolatilityStore, run_id: str, symbol: str, now: datetime, config: VolatilityConfig, fit: Fit
) -> Refit:
    """Fit the symbol's GARCH on its window's closed hours when the daily refit time has passed."""
    reading = await store.volatility(run_id, symbol)
    if not reading.available:
        return Refit(RefitResult.UNAVAILABLE)
    before = reading.state
    if not refit_due(before.as_of if before is not None else None, now, config.refit_at_utc):
        return Refit(RefitResult.NOT_DUE, before)
    window = await store.hourly_closes(run_id, symbol)
    if window is None:
        return Refit(RefitResult.UNAVAILABLE, before)
    closes = [close for ts_open, close in window if ts_open + HOUR <= now]
    if len(closes) - 1 < config.min_returns:
        return Refit(RefitResult.INSUFFICIENT, before)
    try:
        fitted = await fit(symbol, closes, now)
    except VolatilityFitError as exc:
        await store.drop_volatility(run_id, symbol)
        return Refit(RefitResult.FAILED, before, None, str(exc))
    await store.keep_volatility(run_id, fitted)
    return Refit(RefitResult.FITTED, before, fitted)


async def on_hourly_close(
    store: VolatilityStore,
    run_id: str,
    symbol: str,
    ts_open: datetime,
    close: Decimal,
    now: datetime,
    config: VolatilityConfig,
    fit: Fit,
    recorded: Window | None = None,
) -> Refit:
    """The hour opened at ``ts_open`` closed at ``now``: note its close as the latest price, add it
    to the window (after ``recorded``, the hours of :func:`history_span` recorded before it, given
    with a symbol's first hour), and refit when due."""
    await store.note_price(run_id, symbol, close, now)
    if recorded:
        await seed_window(store, run_id, symbol, recorded, config)
    await store.add_hourly_close(run_id, symbol, ts_open, close, config.window_hours + 1)
    return await refit_if_due(store, run_id, symbol, now, config, fit)
