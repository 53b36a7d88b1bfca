"""Composition root of risk: its handlers (``handlers.py``) over PostgreSQL and Redis, as four consumers.

The handlers are the ones the backtest runs over memory; here their book is ``state.pg_risk_book``
(one transaction of plain SQL per handler, the statements in ``state.py``, the ``risk_state``
row lock serialising replicas) and their cache ``state.RiskCache`` (Redis, with the outage mirror:
a Redis outage never fails a handler; an entry's price SET and volatility GET share one pipeline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial

from coinpilot.analytics.volatility import VolatilityState, fit_volatility, load_garch
from coinpilot.clock import floor_hour, wall_clock_now
from coinpilot.contracts import (
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    HourlyCandle,
    OrderRejected,
    Signal,
)
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from coinpilot.symbols import quote_currency
from services.risk import handlers as handlers_module
from services.risk import metrics, rehearsal, state
from services.risk.control import control_consumer
from services.risk.handlers import RiskHandlers
from services.risk.settings import RiskSettings

SIGNALS, SIGNALS_DURABLE = "signals.*.*", handlers_module.SIGNALS_DURABLE
FILLS, FILLS_DURABLE = "fills.*", handlers_module.FILLS_DURABLE
CANDLES, CANDLES_DURABLE = "candles.1h.*", "risk-candles"
REJECTIONS, REJECTIONS_DURABLE = "orders.rejected.*", "risk-rejections"


def build(rt: Runtime) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("risk needs PostgreSQL (COINPILOT_DATABASE_URL) for its state")
    db = rt.db
    settings = RiskSettings()
    config = settings.strategy(rt.settings.strategy_config)
    params = settings.params(config)
    vol = config.risk_management.volatility

    async def fit_in_thread(symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState:
        """A GARCH fit off the event loop (~0.1-0.5 s), timed for the histogram."""
        started = time.perf_counter()
        fitted = await asyncio.to_thread(
            fit_volatility,
            symbol,
            closes,
            now,
            threshold_pct=vol.vol_threshold_hourly_pct,
            window=vol.window_hours,
            min_returns=vol.min_returns,
        )
        metrics.VOLATILITY_FIT_SECONDS.observe(time.perf_counter() - started)
        return fitted

    handlers = RiskHandlers(
        params=params,
        volatility=vol,
        initial_balance=settings.paper_initial_balance,
        cache=state.RiskCache(rt.cache, settings.cache_retry_seconds),
        book=state.pg_risk_book(db),
        fit=fit_in_thread,
        log=rt.log,
        gauge_run_id=rt.settings.run_id,
        history=partial(state.recorded_hourly_closes, db),
    )

    async def on_signal(d: Delivery[Signal]) -> Sequence[Contract]:
        return await handlers.on_signal(d.run_id, d.message)

    async def on_fill(d: Delivery[Fill]) -> Sequence[Contract]:
        return await handlers.on_fill(d.run_id, d.message)

    async def on_rejection(d: Delivery[OrderRejected]) -> Sequence[Contract]:
        return await handlers.on_rejection(d.run_id, d.message)

    async def on_candle(d: Delivery[HourlyCandle]) -> Sequence[Contract]:
        c = d.message
        return await handlers.on_hourly_close(d.run_id, c.symbol, c.ts_open, c.close, c.ts_event)

    async def refit_at_start(rt: Runtime) -> None:
        """Start-up refit (§4.9): each symbol's window is seeded from the hours ``market_data``
        recorded (the closed ones, before the current hour), and fitted now if due."""
        run_id = rt.settings.run_id
        current_hour = floor_hour(wall_clock_now())
        for alert in await handlers.refit_at_start(run_id, rt.settings.symbols, current_hour):
            await rt.bus.publish(alert, run_id=run_id)

    async def start(rt: Runtime) -> None:
        """Before the consumers start: load the GARCH library (see ``load_garch``: the first refit
        must not import it under the handlers), then rehearse the signal path. The import runs in a
        thread: a hot standby taking over keeps renewing its lease meanwhile (runtime/standby.py)."""
        await asyncio.to_thread(load_garch)
        await rehearse(rt)

    async def rehearse(rt: Runtime) -> None:
        """Warm the signal path before the first signal (see ``rehearsal``); a failure only costs that."""
        currency = quote_currency(rt.settings.symbols[0]) if rt.settings.symbols else "KRW"
        try:
            await rehearsal.rehearse_signal_path(db, SIGNALS_DURABLE, params, currency)
        except Exception as exc:
            rt.log.warning("signal rehearsal failed, the first signal pays the warm-up: %r", exc)

    return ServiceDefinition(
        name="risk",
        consumers=[
            Consumer(SIGNALS, SIGNALS_DURABLE, on_signal, parser_for(EntrySignal, ExitSignal)),
            Consumer(FILLS, FILLS_DURABLE, on_fill, parser_for(Fill)),
            Consumer(CANDLES, CANDLES_DURABLE, on_candle, parser_for(HourlyCandle)),
            Consumer(REJECTIONS, REJECTIONS_DURABLE, on_rejection, parser_for(OrderRejected)),
            control_consumer(db),  # control.halt: the kill switch (services/risk/control.py)
        ],
        tasks=[refit_at_start],
        on_start=start,
    )
