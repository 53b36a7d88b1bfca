"""Composition root of risk: four consumers over one per-run risk state, plus the volatility refits.

Handlers of a run are serialised twice: an ``asyncio.Lock`` per run in the process, and the
``risk_state`` row lock (``SELECT ... FOR UPDATE``) across replicas. Each handler is one
transaction of plain SQL (``Database.transaction()``; the statements are in ``state.py``) with the
inbox claim in it. Redis reads happen with their fallbacks (see ``state.py``); a Redis outage never
fails a handler; an entry's price SET and volatility GET share one pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from coinpilot import fill_ledger
from coinpilot.analytics.volatility import VolatilityFitError, VolatilityStatus, fit_volatility, load_garch
from coinpilot.clock import trading_day, wall_clock_now
from coinpilot.contracts import (
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    HourlyCandle,
    OrderProposed,
    OrderRejected,
    RejectReason,
    RiskAlert,
    Side,
    Signal,
    order_id_for,
)
from coinpilot.db import claim_on
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from coinpilot.symbols import quote_currency
from services.risk import checks, core, metrics, rehearsal, state
from services.risk.settings import RiskSettings

SIGNALS, SIGNALS_DURABLE = "signals.*.*", "risk-signals"
FILLS, FILLS_DURABLE = "fills.*", "risk-fills"
CANDLES, CANDLES_DURABLE = "candles.1h.*", "risk-candles"
REJECTIONS, REJECTIONS_DURABLE = "orders.rejected.*", "risk-rejections"
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
FALLBACK_STATUSES = frozenset(
    {
        VolatilityStatus.MISSING,
        VolatilityStatus.STALE,
        VolatilityStatus.UNAVAILABLE,
        VolatilityStatus.NOT_YET_VALID,
    }
)


def build(rt: Runtime) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("risk needs PostgreSQL (COINPILOT_DATABASE_URL) for its state")
    db = rt.db
    settings = RiskSettings()
    config = settings.strategy(rt.settings.strategy_config)
    params = settings.params(config)
    vol = config.risk_management.volatility
    cache = state.RiskCache(rt.cache, settings.cache_retry_seconds)
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def record(run_id: str, step: core.Step, now: datetime) -> None:
        if step.decision is not None:
            metrics.DECISIONS.labels(step.decision.value, step.reason).inc()
        if run_id == rt.settings.run_id:
            metrics.TRADING_HALTED.set(1 if step.state.daily.is_trading_halted else 0)
            metrics.TOTAL_PNL.set(float(step.state.daily.total_pnl))
            until = step.state.cooldown_until
            metrics.COOLDOWN_ACTIVE.set(1 if until is not None and until > now else 0)

    async def on_entry(d: Delivery[Signal], signal: EntrySignal) -> Sequence[Contract]:
        run_id = d.run_id
        day = trading_day(signal.ts_event, params.day_boundary)
        # An implausible price is never noted as the symbol's latest (it would price the exposure).
        sane = checks.signal_price(signal, None, params).passed
        if sane:
            reading = await cache.note_price_and_read_volatility(
                run_id, signal.symbol, signal.price, signal.ts_event
            )
        else:
            reading = await cache.volatility(run_id, signal.symbol)
        async with locks[run_id]:
            snapshot = (
                None if params.reference_equity is not None else await cache.reference_equity(run_id, day)
            )
            async with db.transaction() as conn:
                first_time = await claim_on(conn, SIGNALS_DURABLE, signal.msg_id(), run_id)
                before = await state.load_risk_state(conn, run_id, signal.ts_event, params)
                if not first_time:
                    # Already decided. A BUY still pending is proposed again (same msg_id, so
                    # JetStream drops it unless the first publish was lost); a rejection stays done.
                    if before.pending_orders.get(signal.symbol) != order_id_for(
                        signal.symbol, signal.ts_event, Side.BUY
                    ):
                        return ()
                    before = before.without_pending(signal.symbol)
                rows = await state.read_ledger(
                    conn, run_id, quote_currency(signal.symbol), signal.symbol, signal.ts_event - MINUTE
                )
                prices = await cache.prices(run_id, rows.held_symbols)
                ledger = rows.ledger(prices, snapshot, settings.paper_initial_balance)
                step = core.on_entry_signal(before, signal, ledger, reading, params, rows.recorded_close)
                await state.save_risk_state(conn, run_id, step.state, wall_clock_now(), step.out)
                await state.write_audits(conn, run_id, step.audits)
        if sane and step.reason == RejectReason.IMPLAUSIBLE_PRICE and rows.recorded_close is not None:
            # noted above, then found far from the recorded close of its minute: that close stands
            await cache.note_price(run_id, signal.symbol, rows.recorded_close, signal.ts_event)
        if snapshot is None and step.reference_equity is not None and params.reference_equity is None:
            ttl = state.reference_equity_ttl(signal.ts_event, params)
            await cache.keep_reference_equity(run_id, day, step.reference_equity, ttl)
        if step.volatility is not None:
            if step.volatility in FALLBACK_STATUSES:
                metrics.VOLATILITY_FALLBACKS.labels(signal.symbol, step.volatility.value).inc()
                level = logging.INFO if step.volatility is VolatilityStatus.MISSING else logging.WARNING
                rt.log.log(
                    level, "%s sized with volatility multiplier 1.0: state %s", signal.symbol, step.volatility
                )
            proposal = next((m for m in step.out if isinstance(m, OrderProposed)), None)
            if proposal is not None:
                metrics.VOLATILITY_MULTIPLIER.labels(signal.symbol).set(float(proposal.vol_multiplier))
        record(run_id, step, signal.ts_event)
        for message in step.out:
            if isinstance(message, OrderRejected):
                rt.log.info("BUY %s rejected %s: %s", message.order_id, message.reason, message.message)
            elif isinstance(message, RiskAlert):
                rt.log.warning("risk alert %s: %s", message.type, message.message)
        return step.out

    async def on_exit(d: Delivery[Signal], signal: ExitSignal) -> Sequence[Contract]:
        await cache.note_price(d.run_id, signal.symbol, signal.price, signal.ts_event)
        async with locks[d.run_id], db.transaction() as conn:
            before = await state.load_risk_state(conn, d.run_id, signal.ts_event, params)
            step = core.on_exit_signal(before, signal, params)
            await state.save_risk_state(conn, d.run_id, step.state, wall_clock_now(), step.out)
        record(d.run_id, step, signal.ts_event)
        return step.out

    async def on_signal(d: Delivery[Signal]) -> Sequence[Contract]:
        """Both kinds note the signal's price first (an entry in the same round trip as its
        volatility read)."""
        signal = d.message
        if isinstance(signal, ExitSignal):
            return await on_exit(d, signal)
        return await on_entry(d, signal)

    async def on_fill(d: Delivery[Fill]) -> Sequence[Contract]:
        """A fill is a notification: it counts only when the executor's ledger recorded exactly it
        (read with the state lock); otherwise it is refused before anything changed, its price
        not noted (the ladder dead-letters it and publishes the CRITICAL alert)."""
        fill, run_id = d.message, d.run_id
        async with locks[run_id], db.transaction() as conn:
            first_time = await claim_on(conn, FILLS_DURABLE, fill.msg_id(), run_id)
            before, recorded = await state.load_risk_state_with_fill(
                conn, run_id, fill.order_id, fill.ts_event, params
            )
            reason = fill_ledger.mismatch(fill, recorded)
            if reason is not None:
                rt.log.error("fill %s of %s refused: %s", fill.order_id, fill.symbol, reason)
                raise fill_ledger.refusal(fill, reason)
            await cache.note_price(run_id, fill.symbol, fill.fill_price, fill.ts_event)
            if not first_time:
                return core.repeated_fill(before, fill, params)
            step = core.on_fill(before, fill, params)
            await state.save_risk_state(conn, run_id, step.state, wall_clock_now())
            await state.write_audits(conn, run_id, step.audits)
        record(run_id, step, fill.ts_event)
        for message in step.out:
            if isinstance(message, RiskAlert):
                rt.log.warning("risk alert %s: %s", message.type, message.message)
        return step.out

    async def on_rejection(d: Delivery[OrderRejected]) -> Sequence[Contract]:
        rejected = d.message
        async with locks[d.run_id], db.transaction() as conn:
            before = await state.load_risk_state(conn, d.run_id, rejected.ts_event, params)
            after = core.on_rejection(before, rejected)
            if after != before:
                await state.save_risk_state(conn, d.run_id, after, wall_clock_now())
        return ()

    async def refit_if_due(run_id: str, symbol: str, now: datetime) -> Sequence[Contract]:
        """Fit the symbol's GARCH on its hourly window when the daily refit time has passed."""
        reading = await cache.volatility(run_id, symbol)
        if not reading.available:
            return ()
        last = reading.state.as_of if reading.state is not None else None
        if not core.refit_due(last, now, vol.refit_at_utc):
            return ()
        window = await cache.hourly_closes(run_id, symbol)
        if window is None:
            return ()
        closes = [close for ts_open, close in window if ts_open + HOUR <= now]
        if len(closes) - 1 < vol.min_returns:
            metrics.VOLATILITY_FITS.labels(symbol, "insufficient").inc()
            return ()
        started = time.perf_counter()
        try:
            fitted = await asyncio.to_thread(
                fit_volatility,
                symbol,
                closes,
                now,
                threshold_pct=vol.vol_threshold_hourly_pct,
                window=vol.window_hours,
                min_returns=vol.min_returns,
            )
        except VolatilityFitError as exc:
            metrics.VOLATILITY_FITS.labels(symbol, "failed").inc()
            rt.log.warning("GARCH fit of %s failed, multiplier falls back to 1.0: %s", symbol, exc)
            await cache.drop_volatility(run_id, symbol)
            return ()
        metrics.VOLATILITY_FIT_SECONDS.observe(time.perf_counter() - started)
        metrics.VOLATILITY_FITS.labels(symbol, "fitted").inc()
        metrics.VOLATILITY_INDEX.labels(symbol).set(fitted.current_volatility)
        await cache.keep_volatility(run_id, fitted)
        rt.log.info(
            "GARCH %s as of %s: sigma %.4f %%/h, high=%s",
            symbol,
            now.isoformat(),
            fitted.current_volatility,
            fitted.is_high_volatility,
        )
        alert = core.volatility_alert(reading.state, fitted, now)
        return () if alert is None else (alert,)

    async def on_candle(d: Delivery[HourlyCandle]) -> Sequence[Contract]:
        candle = d.message
        await cache.note_price(d.run_id, candle.symbol, candle.close, candle.ts_event)
        await cache.add_hourly_close(
            d.run_id, candle.symbol, candle.ts_open, candle.close, vol.window_hours + 1
        )
        return await refit_if_due(d.run_id, candle.symbol, candle.ts_event)

    async def refit_at_start(rt: Runtime) -> None:
        """Start-up refit (§4.9): each symbol whose stored window is due gets a fit now."""
        run_id = rt.settings.run_id
        for symbol in rt.settings.symbols:
            window = await cache.hourly_closes(run_id, symbol)
            if window:
                alerts = await refit_if_due(run_id, symbol, window[-1][0] + HOUR)
                for alert in alerts:
                    await rt.bus.publish(alert, run_id=run_id)

    async def start(rt: Runtime) -> None:
        """Before the consumers start: load the GARCH library (see ``load_garch``: the first refit
        must not import it under the handlers), then rehearse the signal path."""
        load_garch()
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
        ],
        tasks=[refit_at_start],
        on_start=start,
    )
