"""The risk service as a pure function: (risk state, message, ledger view, params) -> (state, messages).

* An entry signal is sized (§4.1, rebuild: ``target = ref x max_position_size x regime ratio x
  volatility multiplier``) and checked (§4.2, :mod:`services.risk.checks`): the outcome is an
  ``OrderProposed`` for the agent or an ``OrderRejected`` with its code. A proposed BUY stays
  pending for its symbol until its fill or rejection (or ``pending_timeout``): a second entry
  signal meanwhile is rejected ``ORDER_PENDING``, so a race never makes two orders.
* An exit signal always passes: ``OrderApproved(approved_by=risk)``; halts and cooldowns only
  stop entries.
* Fills keep the daily counters (§4.7 with ``Fill.realized_pnl``) and the loss streak. The streak
  and the cooldown survive the trading-day boundary (§4.5 rebuild); the daily counters and the halt
  reset at it (``params.day_boundary``, default 00:00 UTC).

"Now" is always the message's ``ts_event``. Rejections of checks 4-13, halts and cooldowns come
out as :class:`AuditEntry` rows; halts and cooldowns also as CRITICAL ``RiskAlert``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum

from coinpilot.analytics.volatility import VolatilityState, VolatilityStatus, volatility_multiplier
from coinpilot.cache.keys import REFERENCE_EQUITY_MIN_TTL_SECONDS
from coinpilot.clock import ensure_utc, last_daily_boundary, trading_day, trading_day_start
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectReason,
    RejectStage,
    RiskAlert,
    Side,
    order_id_for,
    order_time,
)
from coinpilot.kill_switch import Halt
from services.risk.checks import AUDITED, OrderCheck, Verdict, check_order, signal_price
from services.risk.params import RiskParams

ZERO = Decimal(0)
ONE = Decimal(1)
EIGHT_DP = Decimal("0.00000001")
COOLDOWN_STARTED = "COOLDOWN_STARTED"
DAILY_LOSS_HALT = "DAILY_LOSS_HALT"


class Decision(StrEnum):
    """The ``decision`` label of ``coinpilot_risk_decisions_total``."""

    PROPOSED = "proposed"
    REJECTED = "rejected"
    APPROVED = "approved"


@dataclass(frozen=True, slots=True)
class DailyState:
    """One trading day's counters (table ``daily_risk_state``)."""

    day: date
    total_pnl: Decimal = ZERO
    buy_count: int = 0
    sell_count: int = 0
    trade_count: int = 0
    is_trading_halted: bool = False


@dataclass(frozen=True, slots=True)
class RiskState:
    """Risk memory of one run: today's counters plus what survives the day (table ``risk_state``)."""

    daily: DailyState
    consecutive_losses: int = 0
    cooldown_until: datetime | None = None
    pending_orders: Mapping[str, str] = field(default_factory=dict)
    last_event_at: datetime | None = None

    def rolled_to(self, day: date) -> RiskState:
        """The state on trading day ``day``: fresh counters on a new day, streak and cooldown kept."""
        if day <= self.daily.day:
            return self
        return replace(self, daily=DailyState(day))

    def at(self, now: datetime, params: RiskParams) -> RiskState:
        state = self.rolled_to(trading_day(now, params.day_boundary))
        last = state.last_event_at
        return replace(state, last_event_at=now if last is None else max(last, now))

    def without_pending(self, symbol: str, order_id: str | None = None) -> RiskState:
        if symbol not in self.pending_orders or (
            order_id is not None and self.pending_orders[symbol] != order_id
        ):
            return self
        return replace(self, pending_orders={s: o for s, o in self.pending_orders.items() if s != symbol})


def initial_state(now: datetime, params: RiskParams) -> RiskState:
    return RiskState(DailyState(trading_day(now, params.day_boundary)))


@dataclass(frozen=True, slots=True)
class Holding:
    quantity: Decimal
    avg_price: Decimal


@dataclass(frozen=True, slots=True)
class Ledger:
    """What the executor's ledger and risk's own price memory say at decision time (read-only).

    ``balance`` is ``None`` when the account row is missing. ``prices`` are the latest prices risk
    has seen (hourly closes, signal and fill prices). ``reference_equity`` is today's snapshot when
    one was already taken (cached by the edge), else ``None``.
    """

    balance: Decimal | None
    positions: Mapping[str, Holding] = field(default_factory=dict)
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    reference_equity: Decimal | None = None
    halt: Halt | None = None

    def held_symbols(self) -> frozenset[str]:
        return frozenset(s for s, h in self.positions.items() if h.quantity > 0)

    def exposure(self) -> Decimal:
        """§4.4: quantity x latest price (or the average price when none was seen)."""
        total = ZERO
        for symbol, holding in self.positions.items():
            if holding.quantity > 0:
                price = self.prices.get(symbol) or holding.avg_price
                total += holding.quantity * price
        return total


@dataclass(frozen=True, slots=True)
class LedgerRows:
    """The executor's ledger of a run as :func:`read_ledger` found it."""

    balance: Decimal | None
    """Cash in the asked currency; None when the account row is missing."""
    held_symbols: list[str]
    """Every symbol with a position, any currency (prices are looked up for these)."""
    positions: dict[str, Holding]
    """The positions in the asked currency."""
    recorded_close: Decimal | None = None
    """The close ``market_data`` holds for the asked symbol and minute, if any."""
    halt: Halt | None = None
    """The run's kill switch when it is on (``coinpilot.kill_switch``)."""

    def ledger(
        self, prices: Mapping[str, Decimal], reference_equity: Decimal | None, initial_balance: Decimal | None
    ) -> Ledger:
        balance = initial_balance if self.balance is None else self.balance
        return Ledger(balance, dict(self.positions), dict(prices), reference_equity, self.halt)


def reference_cached(params: RiskParams) -> bool:
    """Each trading day's reference equity is a snapshot kept in the cache (§4.3), unless the
    settings fix it (``COINPILOT_RISK_REFERENCE_EQUITY``)."""
    return params.reference_equity is None


def reference_to_keep(snapshot: Decimal | None, step: Step, params: RiskParams) -> Decimal | None:
    """The snapshot an entry took, to keep for the rest of its day: only the day's first entry
    (none cached yet) takes one; a fixed reference is never kept."""
    if snapshot is None and reference_cached(params):
        return step.reference_equity
    return None


def reference_equity_ttl(now: datetime, params: RiskParams) -> int:
    """Seconds until the next trading-day boundary, at least one hour."""
    day = trading_day(now, params.day_boundary)
    nxt = trading_day_start(day, params.day_boundary) + timedelta(days=1)
    return max(REFERENCE_EQUITY_MIN_TTL_SECONDS, int((nxt - ensure_utc(now)).total_seconds()))


@dataclass(frozen=True, slots=True)
class VolatilityReading:
    """The volatility state the edge could read: ``available`` False when Redis failed."""

    state: VolatilityState | None = None
    available: bool = True


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A ``risk_audit`` row; unique on (run, order_id, violation_type), so a redelivery adds nothing."""

    violation_type: str
    description: str
    symbol: str
    order_id: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class Sizing:
    """§4.1: the amount to propose, or why there is none."""

    amount: Decimal
    target: Decimal
    reason: RejectReason | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    state: RiskState
    out: tuple[Contract, ...] = ()
    audits: tuple[AuditEntry, ...] = ()
    decision: Decision | None = None
    reason: str = ""
    reference_equity: Decimal | None = None
    volatility: VolatilityStatus | None = None


def reference_equity(ledger: Ledger, params: RiskParams) -> Decimal:
    """§4.3: the fixed setting, else today's snapshot, else balance + exposure (balance if <= 0)."""
    if params.reference_equity is not None:
        return params.reference_equity
    if ledger.reference_equity is not None and ledger.reference_equity > 0:
        return ledger.reference_equity
    balance = ledger.balance or ZERO
    total = balance + ledger.exposure()
    return total if total > 0 else max(balance, ZERO)


def size_order(
    *,
    ref: Decimal,
    balance: Decimal,
    exposure: Decimal,
    ratio: Decimal,
    multiplier: Decimal,
    params: RiskParams,
) -> Sizing:
    """``min(target x multiplier, usable cash, exposure room)`` rounded down to 8 dp (§4.1 rebuild)."""
    target = ref * params.max_position_size * ratio * multiplier
    cash_cap = balance * (ONE - params.fee_buffer)
    exposure_cap = ref * params.max_total_exposure - exposure
    amount = min(target, cash_cap, exposure_cap).quantize(EIGHT_DP, rounding=ROUND_DOWN)
    if amount > 0:
        return Sizing(amount, target)
    if exposure_cap <= 0:
        return Sizing(
            amount, target, RejectReason.EXPOSURE_LIMIT_REACHED, f"exposure room {exposure_cap} <= 0"
        )
    if cash_cap <= 0:
        return Sizing(amount, target, RejectReason.CASH_INSUFFICIENT, f"usable cash {cash_cap} <= 0")
    return Sizing(amount, target, RejectReason.ORDER_AMOUNT_NOT_POSITIVE, f"order amount {amount} <= 0")


def on_entry_signal(
    state: RiskState,
    signal: EntrySignal,
    ledger: Ledger,
    volatility: VolatilityReading,
    params: RiskParams,
    recorded_close: Decimal | None = None,
) -> Step:
    """Size and check a BUY; propose it to the agent or reject it with a code.

    First the price (``checks.signal_price`` against ``recorded_close``, the close ``market_data``
    holds for the signal's minute when the edge found one): an implausible one is rejected
    ``IMPLAUSIBLE_PRICE`` like any other "no", which also frees the strategy's pending order.
    Then the kill switch: while the run is halted (``ledger.halt``) every entry is rejected
    ``TRADING_HALTED`` with the halt's source and reason, before anything is sized.
    """
    now = signal.ts_event
    state = _expire_pending(state.at(now, params), now, params)
    order_id = order_id_for(signal.symbol, signal.ts_event, Side.BUY)
    price = signal_price(signal, recorded_close, params)
    if not price.passed:
        return _reject(state, signal, order_id, price)
    if ledger.halt is not None:
        return _reject(state, signal, order_id, Verdict(RejectReason.TRADING_HALTED, ledger.halt.describe()))
    if signal.symbol in state.pending_orders:
        pending = state.pending_orders[signal.symbol]
        return _reject(
            state, signal, order_id, Verdict(RejectReason.ORDER_PENDING, f"order {pending} is pending")
        )
    if ledger.balance is None:
        return _reject(state, signal, order_id, Verdict(RejectReason.ACCOUNT_MISSING, "no account row"))

    ref = reference_equity(ledger, params)
    if volatility.available:
        multiplier, vol_status = volatility_multiplier(
            volatility.state,
            now,
            stale_after=params.volatility_stale_after,
            high_multiplier=params.high_volatility_multiplier,
        )
    else:
        multiplier, vol_status = ONE, VolatilityStatus.UNAVAILABLE
    exposure = ledger.exposure()
    sizing = size_order(
        ref=ref,
        balance=ledger.balance,
        exposure=exposure,
        ratio=params.size_ratio.get(signal.regime, ZERO),
        multiplier=multiplier,
        params=params,
    )
    if sizing.reason is not None:
        step = _reject(state, signal, order_id, Verdict(sizing.reason, sizing.message))
        return replace(step, reference_equity=ref, volatility=vol_status)

    daily = state.daily
    verdict = check_order(
        OrderCheck(
            symbol=signal.symbol,
            amount=sizing.amount,
            now=now,
            reference_equity=ref,
            balance=ledger.balance,
            exposure=exposure,
            held_symbols=ledger.held_symbols(),
            pending_symbols=frozenset(state.pending_orders),
            vol_multiplier=multiplier,
            total_pnl=daily.total_pnl,
            buy_count=daily.buy_count,
            is_trading_halted=daily.is_trading_halted,
            cooldown_until=state.cooldown_until,
        ),
        params,
    )
    if not verdict.passed:
        step = _reject(state, signal, order_id, verdict)
        return replace(step, reference_equity=ref, volatility=vol_status)

    proposal = OrderProposed(
        ts_event=now,
        order_id=order_id,
        symbol=signal.symbol,
        reference_price=signal.price,
        amount=sizing.amount,
        regime=signal.regime,
        vol_multiplier=multiplier,
        signal=signal,
    )
    pending = {**state.pending_orders, signal.symbol: order_id}
    return Step(
        replace(state, pending_orders=pending),
        (proposal,),
        decision=Decision.PROPOSED,
        reason="PROPOSED",
        reference_equity=ref,
        volatility=vol_status,
    )


def exit_approval(signal: ExitSignal) -> OrderApproved:
    """The SELL order risk approves for an exit signal."""
    return OrderApproved(
        ts_event=signal.ts_event,
        order_id=order_id_for(signal.symbol, signal.ts_event, Side.SELL),
        symbol=signal.symbol,
        side=Side.SELL,
        reference_price=signal.price,
        quantity=signal.quantity,
        regime=signal.regime,
        approved_by=RejectStage.RISK,
        signal=signal,
    )


def on_exit_signal(state: RiskState, signal: ExitSignal, params: RiskParams) -> Step:
    """Exits always pass, halted or not: a stuck risk check must never hold a position open."""
    state = state.at(signal.ts_event, params)
    approved = exit_approval(signal)
    return Step(state, (approved,), decision=Decision.APPROVED, reason=signal.exit_reason.value)


def on_fill(state: RiskState, fill: Fill, params: RiskParams) -> Step:
    """Count the fill into today's state (§4.7); the N-th losing position in a row starts a cooldown."""
    now = fill.ts_event
    state = state.at(now, params).without_pending(fill.symbol, fill.order_id)
    daily = state.daily
    if fill.side is Side.BUY:
        daily = replace(daily, buy_count=daily.buy_count + 1, trade_count=daily.trade_count + 1)
        return Step(replace(state, daily=daily))
    pnl = fill.realized_pnl if fill.realized_pnl is not None else ZERO
    daily = replace(
        daily,
        sell_count=daily.sell_count + 1,
        trade_count=daily.trade_count + 1,
        total_pnl=daily.total_pnl + pnl,
    )
    if fill.position_quantity_after > 0:
        # a partial exit (live, out of book): its PnL counts today, the streak waits for the leg
        # that closes the position (one position, one win or loss)
        return Step(replace(state, daily=daily))
    if pnl >= 0:
        return Step(replace(state, daily=daily, consecutive_losses=0))
    losses = state.consecutive_losses + 1
    if losses < params.cooldown_after_losses:
        return Step(replace(state, daily=daily, consecutive_losses=losses))
    until = now + params.cooldown
    alert = _cooldown_alert(fill, losses, until, params)
    audit = AuditEntry(COOLDOWN_STARTED, alert.message, fill.symbol, fill.order_id, now)
    return Step(
        replace(state, daily=daily, consecutive_losses=0, cooldown_until=until),
        (alert,),
        (audit,),
        reason=COOLDOWN_STARTED,
    )


def repeated_fill(state: RiskState, fill: Fill, params: RiskParams) -> tuple[Contract, ...]:
    """What a fill already counted published: the cooldown alert it started, if any.

    A redelivered fill changes nothing, but if it started the running cooldown its alert is
    issued again (same ``msg_id``, so JetStream drops it unless the first publish was lost).
    """
    pnl = fill.realized_pnl
    if fill.side is not Side.SELL or pnl is None or pnl >= 0 or fill.position_quantity_after > 0:
        return ()
    until = fill.ts_event + params.cooldown
    if state.cooldown_until != until:
        return ()
    return (_cooldown_alert(fill, params.cooldown_after_losses, until, params),)


def _cooldown_alert(fill: Fill, losses: int, until: datetime, params: RiskParams) -> RiskAlert:
    hours = params.cooldown.total_seconds() / 3600
    message = f"{losses} consecutive losses -> trading paused for {hours:g} hours (until {until.isoformat()})"
    return RiskAlert(
        ts_event=fill.ts_event,
        type=AlertType.COOLDOWN,
        level=AlertLevel.CRITICAL,
        message=message,
        symbol=fill.symbol,
    )


def on_rejection(state: RiskState, rejected: OrderRejected) -> RiskState:
    """An agent or executor rejection of a pending BUY frees its symbol."""
    if rejected.stage is RejectStage.RISK or rejected.side is not Side.BUY:
        return state
    return state.without_pending(rejected.symbol, rejected.order_id)


def refit_due(last_fit_as_of: datetime | None, now: datetime, refit_at: time) -> bool:
    """True on the first hourly candle at/after the daily refit time (``now`` = its close time).

    With no fit yet (start-up, or too little history so far) every candle is due.
    """
    return last_fit_as_of is None or last_fit_as_of < last_daily_boundary(now, refit_at)


def volatility_alert(
    before: VolatilityState | None, after: VolatilityState, now: datetime
) -> RiskAlert | None:
    """A WARNING when a symbol's fit turns high (not on every refit that stays high)."""
    if not after.is_high_volatility or (before is not None and before.is_high_volatility):
        return None
    return RiskAlert(
        ts_event=now,
        type=AlertType.VOLATILITY_HIGH,
        level=AlertLevel.WARNING,
        message=(
            f"{after.symbol} hourly volatility {after.current_volatility:.3f} % > {after.threshold_pct:g} %: "
            "new entries are sized at the high-volatility multiplier"
        ),
        symbol=after.symbol,
    )


def _expire_pending(state: RiskState, now: datetime, params: RiskParams) -> RiskState:
    alive = {s: o for s, o in state.pending_orders.items() if now - order_time(o) <= params.pending_timeout}
    if len(alive) == len(state.pending_orders):
        return state
    return replace(state, pending_orders=alive)


def _reject(state: RiskState, signal: EntrySignal, order_id: str, verdict: Verdict) -> Step:
    assert verdict.reason is not None
    rejected = OrderRejected(
        ts_event=signal.ts_event,
        order_id=order_id,
        symbol=signal.symbol,
        side=Side.BUY,
        stage=RejectStage.RISK,
        reason=verdict.reason,
        message=verdict.message,
    )
    out: tuple[Contract, ...] = (rejected,)
    audits: tuple[AuditEntry, ...] = ()
    if verdict.reason in AUDITED:
        audits = (
            AuditEntry(verdict.reason.value, verdict.message, signal.symbol, order_id, signal.ts_event),
        )
    if verdict.halts_trading and not state.daily.is_trading_halted:
        state = replace(state, daily=replace(state.daily, is_trading_halted=True))
        halt = AuditEntry(DAILY_LOSS_HALT, verdict.message, signal.symbol, order_id, signal.ts_event)
        audits = (*audits, halt)
        alert = RiskAlert(
            ts_event=signal.ts_event,
            type=AlertType.DAILY_LOSS_HALT,
            level=AlertLevel.CRITICAL,
            message=f"daily loss limit hit, entries halted until the next trading day: {verdict.message}",
            symbol=signal.symbol,
        )
        out = (rejected, alert)
    return Step(state, out, audits, decision=Decision.REJECTED, reason=verdict.reason.value)
