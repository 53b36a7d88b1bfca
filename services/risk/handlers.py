"""Risk's handlers, written once: load state, call the core, save, return the messages.

The service (``app.py``) runs them over PostgreSQL and Redis (``state.pg_risk_book``,
``state.RiskCache``) behind NATS consumers; the backtest runs the same object over memory
(``stores.MemoryRiskBook``, ``stores.MemoryRiskCache``). Handlers of a run are serialised by an
``asyncio.Lock`` per run here and, in the service, by the ``risk_state`` row lock across replicas.
Each handler is one transaction of its book with the inbox claim in it. What is a rule lives in
``core`` (decisions), ``refit`` (GARCH refits) and the stores (what a cache keeps); this module
only puts them in order, and counts and logs what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from coinpilot import fill_ledger
from coinpilot.analytics.volatility import VolatilityStatus
from coinpilot.clock import trading_day
from coinpilot.contracts import (
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    OrderProposed,
    OrderRejected,
    RejectReason,
    RiskAlert,
    Side,
    order_id_for,
)
from coinpilot.fill_ledger import RecordedFill
from coinpilot.strategy_config import VolatilityConfig
from coinpilot.symbols import quote_currency
from services.risk import checks, core, metrics, refit
from services.risk.core import AuditEntry, LedgerRows, RiskState
from services.risk.params import RiskParams
from services.risk.stores import RiskCacheStore

SIGNALS_DURABLE = "risk-signals"
FILLS_DURABLE = "risk-fills"
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
FALLBACK_STATUSES = frozenset(
    {
        VolatilityStatus.MISSING,
        VolatilityStatus.STALE,
        VolatilityStatus.UNAVAILABLE,
        VolatilityStatus.NOT_YET_VALID,
    }
)
COUNTED_REFITS = frozenset(
    {refit.RefitResult.INSUFFICIENT, refit.RefitResult.FAILED, refit.RefitResult.FITTED}
)


class RiskTx(Protocol):
    """One transaction of risk's system of record (the run's state row is locked until it ends)."""

    async def claim(self, durable: str, msg_id: str, run_id: str) -> bool:
        """True the first time a message is handled (the inbox)."""
        ...

    async def load_state(self, run_id: str, now: datetime, params: RiskParams) -> RiskState: ...

    async def load_state_with_fill(
        self, run_id: str, order_id: str, now: datetime, params: RiskParams
    ) -> tuple[RiskState, RecordedFill | None]: ...

    async def read_ledger(self, run_id: str, currency: str, symbol: str, minute: datetime) -> LedgerRows:
        """The executor's cash and positions, and the recorded close of ``symbol`` at ``minute``."""
        ...

    async def save_state(self, run_id: str, state: RiskState, approved: Sequence[Contract] = ()) -> None:
        """Save the state and record the order among ``approved`` (a step's output) as proposed."""
        ...

    async def write_audits(self, run_id: str, audits: Sequence[AuditEntry]) -> None: ...


class RiskBook(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[RiskTx]: ...


@dataclass
class RiskHandlers:
    """The four inputs of risk (signals, fills, rejections, hourly candles) for any run."""

    params: RiskParams
    volatility: VolatilityConfig
    initial_balance: Decimal | None
    cache: RiskCacheStore
    book: RiskBook
    fit: refit.Fit
    log: logging.Logger
    #: The run whose state the gauges show (the service's own); None: no gauges.
    gauge_run_id: str | None = None
    #: Recorded hourly closes (``market_data``; a backtest's candles before its window) that seed
    #: each (run, symbol)'s GARCH window before its first hour here; None: the bus's hours only.
    history: refit.RecordedHours | None = None
    locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    seeded: set[tuple[str, str]] = field(default_factory=set)

    # -- signals -----------------------------------------------------------------------------
    async def on_signal(self, run_id: str, signal: EntrySignal | ExitSignal) -> Sequence[Contract]:
        """Both kinds note the signal's price first (an entry in the same round trip as its
        volatility read)."""
        if isinstance(signal, ExitSignal):
            return await self.on_exit(run_id, signal)
        return await self.on_entry(run_id, signal)

    async def on_entry(self, run_id: str, signal: EntrySignal) -> Sequence[Contract]:
        params, cache = self.params, self.cache
        day = trading_day(signal.ts_event, params.day_boundary)
        # An implausible price is never noted as the symbol's latest (it would price the exposure).
        sane = checks.signal_price(signal, None, params).passed
        if sane:
            reading = await cache.note_price_and_read_volatility(
                run_id, signal.symbol, signal.price, signal.ts_event
            )
        else:
            reading = await cache.volatility(run_id, signal.symbol)
        async with self.locks[run_id]:
            snapshot = await cache.reference_equity(run_id, day) if core.reference_cached(params) else None
            async with self.book.transaction() as tx:
                first_time = await tx.claim(SIGNALS_DURABLE, signal.msg_id(), run_id)
                before = await tx.load_state(run_id, signal.ts_event, params)
                if not first_time:
                    # Already decided. A BUY still pending is proposed again (same msg_id, so
                    # JetStream drops it unless the first publish was lost); a rejection stays done.
                    buy_id = order_id_for(signal.symbol, signal.ts_event, Side.BUY)
                    if before.pending_orders.get(signal.symbol) != buy_id:
                        return ()
                    before = before.without_pending(signal.symbol)
                rows = await tx.read_ledger(
                    run_id, quote_currency(signal.symbol), signal.symbol, signal.ts_event - MINUTE
                )
                prices = await cache.prices(run_id, rows.held_symbols)
                ledger = rows.ledger(prices, snapshot, self.initial_balance)
                step = core.on_entry_signal(before, signal, ledger, reading, params, rows.recorded_close)
                await tx.save_state(run_id, step.state, step.out)
                await tx.write_audits(run_id, step.audits)
        if sane and step.reason == RejectReason.IMPLAUSIBLE_PRICE and rows.recorded_close is not None:
            # noted above, then found far from the recorded close of its minute: that close stands
            await cache.note_price(run_id, signal.symbol, rows.recorded_close, signal.ts_event)
        keep = core.reference_to_keep(snapshot, step, params)
        if keep is not None:
            ttl = core.reference_equity_ttl(signal.ts_event, params)
            await cache.keep_reference_equity(run_id, day, keep, ttl)
        self._count_volatility(signal, step)
        self._record(run_id, step, signal.ts_event)
        for message in step.out:
            if isinstance(message, OrderRejected):
                self.log.info("BUY %s rejected %s: %s", message.order_id, message.reason, message.message)
            elif isinstance(message, RiskAlert):
                self.log.warning("risk alert %s: %s", message.type, message.message)
        return step.out

    async def on_exit(self, run_id: str, signal: ExitSignal) -> Sequence[Contract]:
        await self.cache.note_price(run_id, signal.symbol, signal.price, signal.ts_event)
        async with self.locks[run_id], self.book.transaction() as tx:
            before = await tx.load_state(run_id, signal.ts_event, self.params)
            step = core.on_exit_signal(before, signal, self.params)
            await tx.save_state(run_id, step.state, step.out)
        self._record(run_id, step, signal.ts_event)
        return step.out

    # -- fills and rejections ----------------------------------------------------------------
    async def on_fill(self, run_id: str, fill: Fill) -> Sequence[Contract]:
        """A fill is a notification: it counts only when the executor's ledger recorded exactly it
        (read with the state lock); otherwise it is refused before anything changed, its price
        not noted (the ladder dead-letters it and publishes the CRITICAL alert)."""
        async with self.locks[run_id], self.book.transaction() as tx:
            first_time = await tx.claim(FILLS_DURABLE, fill.msg_id(), run_id)
            before, recorded = await tx.load_state_with_fill(
                run_id, fill.order_id, fill.ts_event, self.params
            )
            reason = fill_ledger.mismatch(fill, recorded)
            if reason is not None:
                self.log.error("fill %s of %s refused: %s", fill.order_id, fill.symbol, reason)
                raise fill_ledger.refusal(fill, reason)
            await self.cache.note_price(run_id, fill.symbol, fill.fill_price, fill.ts_event)
            if not first_time:
                return core.repeated_fill(before, fill, self.params)
            step = core.on_fill(before, fill, self.params)
            await tx.save_state(run_id, step.state)
            await tx.write_audits(run_id, step.audits)
        self._record(run_id, step, fill.ts_event)
        for message in step.out:
            if isinstance(message, RiskAlert):
                self.log.warning("risk alert %s: %s", message.type, message.message)
        return step.out

    async def on_rejection(self, run_id: str, rejected: OrderRejected) -> Sequence[Contract]:
        async with self.locks[run_id], self.book.transaction() as tx:
            before = await tx.load_state(run_id, rejected.ts_event, self.params)
            after = core.on_rejection(before, rejected)
            if after != before:
                await tx.save_state(run_id, after)
        return ()

    # -- hourly candles: the GARCH refits ----------------------------------------------------
    async def on_hourly_close(
        self, run_id: str, symbol: str, ts_open: datetime, close: Decimal, now: datetime
    ) -> Sequence[Contract]:
        """The first hour of a (run, symbol) here comes after its recorded history (``history``):
        the window is seeded with the recorded hours before it, then the refit policy runs."""
        recorded = None
        if self.history is not None and (run_id, symbol) not in self.seeded:
            recorded = await self.history(symbol, *refit.history_span(ts_open, self.volatility))
        done = await refit.on_hourly_close(
            self.cache, run_id, symbol, ts_open, close, now, self.volatility, self.fit, recorded
        )
        self.seeded.add((run_id, symbol))
        return self._refitted(symbol, now, done)

    async def refit_at_start(
        self, run_id: str, symbols: Sequence[str], recorded_until: datetime | None = None
    ) -> list[Contract]:
        """Start-up refit (§4.9): each symbol's window is seeded with the recorded hours opened
        before ``recorded_until`` (when ``history`` is given: the service passes the current hour),
        then each symbol whose window is due gets a fit now, as of its last hour's end."""
        alerts: list[Contract] = []
        for symbol in symbols:
            if (
                self.history is not None
                and recorded_until is not None
                and (run_id, symbol) not in self.seeded
            ):
                span = refit.history_span(recorded_until, self.volatility)
                recorded = await self.history(symbol, *span)
                await refit.seed_window(self.cache, run_id, symbol, recorded, self.volatility)
                # Nothing recorded yet (a first start, the collector's backfill still running):
                # the symbol's first hour on the bus reads the history again.
                if recorded:
                    self.seeded.add((run_id, symbol))
            window = await self.cache.hourly_closes(run_id, symbol)
            if window:
                now = window[-1][0] + HOUR
                done = await refit.refit_if_due(self.cache, run_id, symbol, now, self.volatility, self.fit)
                alerts.extend(self._refitted(symbol, now, done))
        return alerts

    # -- counting and logging ----------------------------------------------------------------
    def _refitted(self, symbol: str, now: datetime, done: refit.Refit) -> Sequence[Contract]:
        if done.result in COUNTED_REFITS:
            metrics.VOLATILITY_FITS.labels(symbol, done.result.value).inc()
        if done.result is refit.RefitResult.FAILED:
            self.log.warning("GARCH fit of %s failed, multiplier falls back to 1.0: %s", symbol, done.error)
        if done.result is refit.RefitResult.FITTED and done.after is not None:
            metrics.VOLATILITY_INDEX.labels(symbol).set(done.after.current_volatility)
            self.log.info(
                "GARCH %s as of %s: sigma %.4f %%/h, high=%s",
                symbol,
                now.isoformat(),
                done.after.current_volatility,
                done.after.is_high_volatility,
            )
        alert = done.alert(now)
        return () if alert is None else (alert,)

    def _count_volatility(self, signal: EntrySignal, step: core.Step) -> None:
        if step.volatility is None:
            return
        if step.volatility in FALLBACK_STATUSES:
            metrics.VOLATILITY_FALLBACKS.labels(signal.symbol, step.volatility.value).inc()
            level = logging.INFO if step.volatility is VolatilityStatus.MISSING else logging.WARNING
            self.log.log(
                level, "%s sized with volatility multiplier 1.0: state %s", signal.symbol, step.volatility
            )
        proposal = next((m for m in step.out if isinstance(m, OrderProposed)), None)
        if proposal is not None:
            metrics.VOLATILITY_MULTIPLIER.labels(signal.symbol).set(float(proposal.vol_multiplier))

    def _record(self, run_id: str, step: core.Step, now: datetime) -> None:
        if step.decision is not None:
            metrics.DECISIONS.labels(step.decision.value, step.reason).inc()
        if run_id == self.gauge_run_id:
            metrics.TRADING_HALTED.set(1 if step.state.daily.is_trading_halted else 0)
            metrics.TOTAL_PNL.set(float(step.state.daily.total_pnl))
            until = step.state.cooldown_until
            metrics.COOLDOWN_ACTIVE.set(1 if until is not None and until > now else 0)
