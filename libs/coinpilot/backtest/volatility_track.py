"""Risk's GARCH bookkeeping in a backtest, and fitting it ahead on the second core.

:class:`VolatilityTrack` is what the risk service does with each hourly candle (§4.9): keep the
last ``window_hours + 1`` closes, refit once a day at ``refit_at_utc`` once ``min_returns`` returns
exist, drop the state when a fit fails. Its fits depend only on the hourly closes, so the whole
sequence of fits of a run is known as soon as the indicators are: :func:`start_fitting_ahead`
computes it in a worker process while the engine runs, and the engine's track takes each fit from
there (:class:`FitsAhead`) instead of fitting in line. A fit the worker did not make for exactly
the same closes is made in line, so the result never depends on the worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from coinpilot.analytics.volatility import VolatilityFitError, VolatilityState, fit_volatility
from coinpilot.strategy_config import VolatilityConfig
from services.risk import core as risk_core

HOUR = timedelta(hours=1)
Closes = list[tuple[datetime, Decimal]]
Fitter = Callable[[str, list[Decimal], datetime], VolatilityState | None]
HourlyClose = tuple[datetime, Decimal, datetime]  # (hour open, close, event time = hour end)


def fit_in_line(config: VolatilityConfig) -> Fitter:
    def fit(symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        try:
            return fit_volatility(
                symbol,
                closes,
                now,
                threshold_pct=config.vol_threshold_hourly_pct,
                window=config.window_hours,
                min_returns=config.min_returns,
            )
        except VolatilityFitError:
            return None

    return fit


@dataclass
class VolatilityTrack:
    """Every symbol's hourly window and fit, as the risk service keeps them."""

    config: VolatilityConfig
    fit: Fitter
    closes: dict[str, Closes] = field(default_factory=dict)
    states: dict[str, VolatilityState] = field(default_factory=dict)

    def on_hour(self, symbol: str, ts_open: datetime, close: Decimal, now: datetime) -> Refit | None:
        """Record the hour closing at ``now``; a :class:`Refit` when the symbol was refitted now."""
        window = self.closes.setdefault(symbol, [])
        if window and window[-1][0] >= ts_open:  # a redelivered hour replaces its entry
            window[:] = sorted([w for w in window if w[0] != ts_open] + [(ts_open, close)])
        else:
            window.append((ts_open, close))
        del window[: -(self.config.window_hours + 1)]
        before = self.states.get(symbol)
        last = before.as_of if before is not None else None
        if not risk_core.refit_due(last, now, self.config.refit_at_utc):
            return None
        closes = [c for ts, c in window if ts + HOUR <= now]
        if len(closes) - 1 < self.config.min_returns:
            return None
        fitted = self.fit(symbol, closes, now)
        if fitted is None:
            self.states.pop(symbol, None)
        else:
            self.states[symbol] = fitted
        return Refit(before, fitted)


@dataclass(frozen=True, slots=True)
class Refit:
    before: VolatilityState | None
    after: VolatilityState | None  # None: the fit failed and the symbol has no state now


def fit_key(symbol: str, closes: Sequence[Decimal], now: datetime) -> str:
    digest = hashlib.sha256("\n".join(map(str, closes)).encode()).hexdigest()
    return f"{symbol}|{now.isoformat()}|{digest}"


def fits_of(
    config: VolatilityConfig, hours: dict[str, list[HourlyClose]]
) -> dict[str, VolatilityState | None]:
    """Every fit a run over ``hours`` (per symbol, in time order) makes, by :func:`fit_key`."""
    made: dict[str, VolatilityState | None] = {}
    real = fit_in_line(config)

    def record(symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        made[fit_key(symbol, closes, now)] = state = real(symbol, closes, now)
        return state

    track = VolatilityTrack(config, record)
    for symbol, series in hours.items():
        for ts_open, close, now in series:
            track.on_hour(symbol, ts_open, close, now)
    return made


def expected_fits(config: VolatilityConfig, hours: dict[str, list[HourlyClose]]) -> int:
    """A lower bound of the fits a run makes: one per day once ``min_returns`` hours are in."""
    return sum(max(0, (len(h) - config.min_returns - 1) // 24 + 1) for h in hours.values())


@dataclass
class FitsAhead:
    """The worker's fits, waited for at the first one the engine needs; misses are fitted in line."""

    future: Future[dict[str, VolatilityState | None]]
    fallback: Fitter
    pool: ProcessPoolExecutor
    _fits: dict[str, VolatilityState | None] | None = None

    def __call__(self, symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        if self._fits is None:
            try:
                self._fits = self.future.result()
            except Exception:  # a worker that died costs time, never a result
                self._fits = {}
            self.pool.shutdown(wait=False)
        key = fit_key(symbol, closes, now)
        if key in self._fits:
            return self._fits[key]
        return self.fallback(symbol, closes, now)

    def close(self) -> None:
        self.future.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


def start_fitting_ahead(config: VolatilityConfig, hours: dict[str, list[HourlyClose]]) -> FitsAhead:
    """Start :func:`fits_of` in a forked worker: the engine's modules are loaded already, arch is
    imported there, in parallel with the run (a spawned worker would re-import everything)."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    return FitsAhead(pool.submit(fits_of, config, hours), fit_in_line(config), pool)
