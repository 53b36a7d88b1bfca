"""Risk's GARCH bookkeeping in a backtest, and fitting it ahead on the second core.

:class:`VolatilityTrack` runs the risk service's refit policy (``services.risk.refit``, §4.9) on
each hourly candle over risk's memory cache. Its fits depend only on the hourly closes, so the whole
sequence of fits of a run is known as soon as the indicators are: :class:`FitsAhead`
computes it in a worker process while the engine runs (the worker imports arch while the engine
computes indicators, then streams each fit as it is made), and the engine's track takes each fit
from there (:class:`FitsAhead`) instead of fitting in line. A fit the worker did not make for
exactly the same closes is made in line, so the result never depends on the worker. Once its
fits are made, the worker renders the report's chart (``charts_ahead``).

Like the service, a run's GARCH windows start from recorded history: the hours before a symbol's
first traded hour (``recorded``, the candles before the window, read as ``market_data`` would
answer ``refit.history_span``) seed its window with that first hour, in the engine's risk handler
and in every replay of its refits here alike.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from apps.backtest import fit_worker
from apps.backtest.charts_ahead import ChartAhead, serve
from coinpilot.analytics.volatility import VolatilityFitError, VolatilityState, fit_volatility
from coinpilot.strategy_config import VolatilityConfig
from services.risk import refit
from services.risk.refit import Refit, RefitResult, Window
from services.risk.stores import MemoryRiskCache

HOUR = timedelta(hours=1)
MADE = frozenset({RefitResult.FITTED, RefitResult.FAILED})
T = TypeVar("T")
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
    """Risk's GARCH refits in a backtest: the service's policy (``services.risk.refit``) over its
    memory cache, with this run's fitter (in line, or :class:`FitsAhead`)."""

    config: VolatilityConfig
    fit: Fitter
    cache: MemoryRiskCache = field(default_factory=MemoryRiskCache)
    run_id: str = "backtest"
    #: Per symbol, the recorded hours that seed its window with its first hour (``refit.history_span``).
    recorded: dict[str, Window] = field(default_factory=dict)
    seeded: set[str] = field(default_factory=set)

    async def refit_fit(self, symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState:
        """:attr:`fit` as the policy's ``refit.Fit`` (a failed fit raises)."""
        fitted = self.fit(symbol, closes, now)
        if fitted is None:
            raise VolatilityFitError(f"GARCH fit of {symbol} as of {now.isoformat()} failed")
        return fitted

    def on_hour(self, symbol: str, ts_open: datetime, close: Decimal, now: datetime) -> Refit | None:
        """Record the hour closing at ``now`` (the symbol's first one after its recorded hours);
        the :class:`Refit` when the symbol was refitted now."""
        recorded = None if symbol in self.seeded else self.recorded.get(symbol)
        self.seeded.add(symbol)
        done = run_in_memory(
            refit.on_hourly_close(
                self.cache, self.run_id, symbol, ts_open, close, now, self.config, self.refit_fit, recorded
            )
        )
        return done if done.result in MADE else None

    @property
    def states(self) -> dict[str, VolatilityState]:
        return self.cache.volatility_states(self.run_id)

    @property
    def closes(self) -> dict[str, Closes]:
        return self.cache.windows(self.run_id)


def run_in_memory(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (memory stores, a fitter in line) without an event loop:
    the fit worker and the tests replay a run's refits this way, in the engine's own order."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a coroutine over memory stores suspended: it needs an event loop")


def fit_key(symbol: str, closes: Sequence[Decimal], now: datetime) -> str:
    digest = hashlib.sha256("\n".join(map(str, closes)).encode()).hexdigest()
    return f"{symbol}|{now.isoformat()}|{digest}"


def fits_of(
    config: VolatilityConfig,
    hours: dict[str, list[HourlyClose]],
    recorded: dict[str, Window] | None = None,
) -> dict[str, VolatilityState | None]:
    """Every fit a run over ``hours`` (per symbol, in time order, after its ``recorded`` hours)
    makes, by :func:`fit_key`."""
    made: dict[str, VolatilityState | None] = {}
    real = fit_in_line(config)

    def record(symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        made[fit_key(symbol, closes, now)] = state = real(symbol, closes, now)
        return state

    track = VolatilityTrack(config, record, recorded=dict(recorded or {}))
    for symbol, series in hours.items():
        for ts_open, close, now in series:
            track.on_hour(symbol, ts_open, close, now)
    return made


def expected_fits(
    config: VolatilityConfig, traded_hours: dict[str, int], recorded_hours: dict[str, int] | None = None
) -> int:
    """A lower bound of the fits a run makes: one per day once ``min_returns`` hours are in
    (the recorded ones count from the start)."""
    recorded = recorded_hours or {}
    return sum(
        max(0, (n - max(0, config.min_returns + 1 - recorded.get(s, 0))) // 24 + 1) if n else 0
        for s, n in traded_hours.items()
    )


def serve_fits(conn: Connection) -> None:
    """The worker (``fit_worker``): import arch, stream every fit of the hours it is sent, then
    serve the report's chart (``charts_ahead.serve``) until the main process closes the pipe."""
    # Collections would walk (and so copy, page by page) the heap forked from the engine, and the
    # ~120,000 objects of the import are all long-lived: no collection until the fits start.
    gc.disable()
    gc.freeze()
    from arch import arch_model  # noqa: F401  (the import is the point: it takes ~1-1.5 s)

    gc.freeze()
    gc.enable()

    config, hours, recorded = conn.recv()
    from apps.backtest.fit_pair import PairFitter  # a sibling makes every other fit (its docstring)

    real = PairFitter(config, hours, (conn,), recorded=recorded)

    def fit_and_send(symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        state = real(symbol, closes, now)
        conn.send((fit_key(symbol, closes, now), state))
        return state

    track = VolatilityTrack(config, fit_and_send, recorded=recorded)
    for symbol, series in hours.items():
        for ts_open, close, now in series:
            track.on_hour(symbol, ts_open, close, now)
    real.close()
    conn.send(None)
    serve(conn)
    conn.close()


class FitsAhead:
    """Fits made by a worker process, received as it makes them; misses are fitted in line.

    Start it before the indicators are computed (:meth:`start`: the spare worker
    ``fit_worker.fork_spare`` forked, if any, else a new one), hand it the hourly closes when
    they are known (:meth:`submit`), then use it as the track's fitter. A worker that dies or
    never answers costs time, never a different result. After the run, :meth:`to_chart_renderer`
    hands the worker over to render the report's chart; :meth:`close` stops it unless handed over.
    """

    def __init__(self, config: VolatilityConfig) -> None:
        self.fallback = fit_in_line(config)
        self._config = config
        self._fits: dict[str, VolatilityState | None] = {}
        self._done = False
        self._handed_over = False
        self._worker: fit_worker.Worker | None = None

    def start(self) -> FitsAhead:
        self._worker = fit_worker.take()
        return self

    def _started(self) -> fit_worker.Worker:
        if self._worker is None:
            raise RuntimeError("FitsAhead.start() was not called")
        return self._worker

    def submit(self, hours: dict[str, list[HourlyClose]], recorded: dict[str, Window] | None = None) -> None:
        """The run's hours per symbol, and the recorded hours that seed each symbol's window."""
        self._started()[1].send((self._config, hours, dict(recorded or {})))

    def __call__(self, symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        key = fit_key(symbol, closes, now)
        while key not in self._fits and not self._done:
            self._receive()
        if key in self._fits:
            return self._fits.pop(key)
        return self.fallback(symbol, closes, now)

    def _receive(self) -> None:
        process, conn = self._started()
        try:
            while not conn.poll(0.2):
                if not process.is_alive() and not conn.poll(0):
                    self._done = True
                    return
            message = conn.recv()
        except (EOFError, OSError):
            self._done = True
            return
        if message is None:
            self._done = True
        else:
            key, state = message
            self._fits[key] = state

    def to_chart_renderer(self) -> ChartAhead | None:
        """The worker, from now on a chart renderer (None when it is gone); this fitter stops using it."""
        process, conn = self._started()
        if not process.is_alive():
            return None
        self._handed_over = True
        return ChartAhead(process, conn, fits_pending=not self._done)

    def close(self) -> None:
        if self._handed_over or self._worker is None:
            return
        process, conn = self._worker
        if process.is_alive():
            process.kill()
        process.join()
        conn.close()
