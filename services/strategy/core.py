"""The strategy service as a pure function: (symbol state, message, params) -> (state, signals).

Per symbol the state is the position as the fills told it (opened by a BUY fill, closed by a SELL
fill), its high-water mark of closes, the order that is pending (an entry or exit signal waiting
for its fill or rejection), and the last candle evaluated. On every closed candle:

* a position exists -> exit rules only (§3.1); the HWM moves up with the close whatever happens;
  a position whose exit executed only in part (a live market sell that ran out of book; paper
  sells it all) is ``exiting``: the next candle signals the rest with the same exit reason, whatever
  the rules say then. The exit was decided; the thin book only delayed it. (Not at once on the
  fill: an order's id is its symbol, minute and side, so a second SELL of the same minute would be
  the first one again.)
* an exit the executor refuses as dust (``BELOW_EXCHANGE_MINIMUM``: worth less than the
  exchange's minimum order total, it cannot be sold) closes the position as dust: no exit is
  signalled for it again and entries are possible again (the executor's ledger keeps the dust and
  the next BUY of the symbol takes it over);
* no position -> entry rules (§3.2);
* an order is pending for the symbol -> no new signal until its fill or rejection arrives, or
  ``params.pending_timeout`` of event time has passed (a lost message must not freeze a symbol).

A candle at or before the last one evaluated is a redelivery: it changes nothing, and if the
signal it fired is still pending the same signal is returned again (same ``msg_id``, so JetStream
drops the copy), which makes a crash between commit and publish lose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from coinpilot.contracts import (
    EntrySignal,
    ExitReason,
    ExitSignal,
    Fill,
    IndicatorSnapshot,
    OrderRejected,
    Regime,
    RejectReason,
    Side,
    order_id_for,
    order_time,
)
from coinpilot.contracts.enums import EntryReason
from coinpilot.fill_ledger import RecordedFill, mismatch
from services.strategy.params import StrategyParams
from services.strategy.rules import EntryDecision, ExitDecision, OpenPosition, evaluate_entry, evaluate_exit

HUNDRED = Decimal(100)


class Action(StrEnum):
    """The ``action`` of the dashboard status (§6.6)."""

    HOLD = "HOLD"
    HOLD_POSITION = "HOLD (POS)"
    BUY = "BUY"
    SELL = "SELL"
    WAITING = "WAITING"


class HoldReason(StrEnum):
    """Reason codes of evaluations that are neither an entry check nor an exit."""

    HOLDING = "HOLDING"
    ENTRY_PENDING = "ENTRY_PENDING"
    EXIT_PENDING = "EXIT_PENDING"
    NO_ENTRY_PRICE = "NO_ENTRY_PRICE"


WAITING_REASONS = frozenset({EntryReason.REGIME_UNKNOWN, EntryReason.WARMING_UP})

CLOSES_POSITION = frozenset({RejectReason.NO_POSITION, RejectReason.BELOW_EXCHANGE_MINIMUM})
"""Executor reasons for refusing an exit that mean there is no position left to exit."""


@dataclass(frozen=True, slots=True)
class Position:
    """An open position as the fills described it."""

    position_id: str
    avg_price: Decimal
    quantity: Decimal
    entry_regime: Regime
    opened_at: datetime
    high_water_mark: Decimal
    exiting: ExitReason | None = None
    """The exit reason of an exit that executed only in part: the rest is signalled again."""

    def view(self) -> OpenPosition:
        return OpenPosition(self.avg_price, self.opened_at, self.entry_regime, self.high_water_mark)


@dataclass(frozen=True, slots=True)
class SymbolState:
    symbol: str
    position: Position | None = None
    pending_order_id: str | None = None
    last_candle_at: datetime | None = None
    last_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one candle's evaluation concluded: the dashboard status and the metric labels."""

    action: Action
    reason: str
    passed_checks: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    state: SymbolState
    out: tuple[EntrySignal | ExitSignal, ...] = ()
    evaluation: Evaluation | None = None


def on_snapshot(state: SymbolState, snapshot: IndicatorSnapshot, params: StrategyParams) -> Step:
    """Evaluate one closed candle: exits for a held symbol, entries otherwise."""
    now = snapshot.ts_event
    if state.last_candle_at is not None and now <= state.last_candle_at:
        return _redelivered(state, snapshot, params)
    state = _expire_pending(state, now, params)
    step = _evaluate(state, snapshot, params)
    evaluation = step.evaluation
    assert evaluation is not None
    return Step(replace(step.state, last_candle_at=now, last_reason=evaluation.reason), step.out, evaluation)


def absorb_holds(state: SymbolState, highest_close: Decimal, last_event: datetime) -> SymbolState:
    """What :func:`on_snapshot` leaves of a run of candles that were all holds (no signal fired and
    no pending order expired): the position's high-water mark through their highest close, and the
    last candle's event time. The backtest's fast path steps over holds with this instead of
    evaluating each (equal ledgers: ``tests/unit/backtest/test_fast_path.py``)."""
    position = state.position
    if position is not None and highest_close > position.high_water_mark:
        position = replace(position, high_water_mark=highest_close)
    return replace(state, position=position, last_candle_at=last_event)


def fill_refusal(state: SymbolState, fill: Fill, recorded: RecordedFill | None) -> str | None:
    """Why a fill must not be applied, or None: it must be the fill the executor's ledger recorded
    for its order, and a SELL must close the position this symbol holds (a genuine fill always
    does: the strategy signalled the exit of the position it holds)."""
    reason = mismatch(fill, recorded)
    if reason is not None or recorded is None:
        return reason
    position = state.position
    if fill.side is Side.SELL and position is not None and recorded.position_id != position.position_id:
        return f"it closed position {recorded.position_id}, the strategy holds {position.position_id}"
    return None


def on_fill(state: SymbolState, fill: Fill) -> SymbolState:
    """A BUY fill opens (or adds to) the position; a SELL fill closes it. Redeliveries change nothing."""
    pending = None if state.pending_order_id == fill.order_id else state.pending_order_id
    position = state.position
    if fill.side is Side.BUY:
        if position is not None and position.position_id == fill.order_id:
            return replace(state, pending_order_id=pending)
        position = Position(
            position_id=fill.order_id if position is None else position.position_id,
            avg_price=fill.position_avg_price_after,
            quantity=fill.position_quantity_after,
            entry_regime=fill.regime,
            opened_at=fill.opened_at,
            high_water_mark=max(
                fill.high_water_mark, position.high_water_mark if position else fill.high_water_mark
            ),
        )
    elif position is not None:
        if fill.position_quantity_after <= 0:
            position = None
        else:  # a partial exit: the rest is exited on the next candle
            # (a SELL fill names its exit; a fill without one still gets the rest sold)
            position = replace(
                position,
                quantity=fill.position_quantity_after,
                exiting=fill.exit_reason or position.exiting or ExitReason.STOP_LOSS,
            )
    return replace(state, position=position, pending_order_id=pending)


def on_rejection(state: SymbolState, rejected: OrderRejected) -> SymbolState:
    """A rejection (risk, agent or executor) of the pending order frees the symbol for new signals.

    An exit the executor refused with ``NO_POSITION`` means the ledger holds nothing to sell, one
    refused ``BELOW_EXCHANGE_MINIMUM`` that it holds dust (less than any order may sell): the
    position view is dropped too, instead of signalling the same exit on every candle.
    """
    if state.pending_order_id != rejected.order_id:
        return state
    if rejected.side is Side.SELL and rejected.reason in CLOSES_POSITION:
        return replace(state, pending_order_id=None, position=None)
    return replace(state, pending_order_id=None)


def _expire_pending(state: SymbolState, now: datetime, params: StrategyParams) -> SymbolState:
    if state.pending_order_id is None:
        return state
    if now - order_time(state.pending_order_id) > params.pending_timeout:
        return replace(state, pending_order_id=None)
    return state


def _redelivered(state: SymbolState, snapshot: IndicatorSnapshot, params: StrategyParams) -> Step:
    """A candle already evaluated: re-issue its signal if that order is still pending, else nothing."""
    now = snapshot.ts_event
    if now != state.last_candle_at or state.pending_order_id is None:
        return Step(state)
    fired_now = {order_id_for(state.symbol, now, side) for side in Side}
    if state.pending_order_id not in fired_now:
        return Step(state)
    again = _evaluate(replace(state, pending_order_id=None), snapshot, params)
    if again.state.pending_order_id != state.pending_order_id:
        return Step(state)
    return Step(state, again.out, again.evaluation)


def _evaluate(state: SymbolState, snapshot: IndicatorSnapshot, params: StrategyParams) -> Step:
    if state.position is not None:
        return _evaluate_exit(state, state.position, snapshot, params)
    if state.pending_order_id is not None:
        return Step(
            state, (), Evaluation(Action.WAITING, HoldReason.ENTRY_PENDING, detail=state.pending_order_id)
        )
    decision = evaluate_entry(snapshot, params)
    if not decision.is_entry:
        action = Action.WAITING if decision.reason in WAITING_REASONS else Action.HOLD
        return Step(state, (), Evaluation(action, decision.reason, decision.passed_checks, decision.detail))
    signal = _entry_signal(snapshot, decision)
    pending = order_id_for(snapshot.symbol, snapshot.ts_event, Side.BUY)
    return Step(
        replace(state, pending_order_id=pending),
        (signal,),
        Evaluation(Action.BUY, decision.reason, decision.passed_checks),
    )


def _evaluate_exit(
    state: SymbolState, position: Position, snapshot: IndicatorSnapshot, params: StrategyParams
) -> Step:
    decision = evaluate_exit(position.view(), snapshot, params)
    if decision.reason is None and position.exiting is not None:
        decision = replace(decision, reason=position.exiting)  # the rest of a partial exit
    position = replace(position, high_water_mark=decision.new_hwm)
    state = replace(state, position=position)
    if position.avg_price <= 0:
        return Step(state, (), Evaluation(Action.HOLD_POSITION, HoldReason.NO_ENTRY_PRICE))
    if state.pending_order_id is not None:
        return Step(
            state,
            (),
            Evaluation(Action.HOLD_POSITION, HoldReason.EXIT_PENDING, detail=state.pending_order_id),
        )
    if decision.reason is None:
        return Step(
            state,
            (),
            Evaluation(Action.HOLD_POSITION, HoldReason.HOLDING, detail=_holding(position, snapshot)),
        )
    signal = _exit_signal(snapshot, position, decision)
    pending = order_id_for(snapshot.symbol, snapshot.ts_event, Side.SELL)
    return Step(
        replace(state, pending_order_id=pending),
        (signal,),
        Evaluation(Action.SELL, decision.reason, detail=f"pnl {decision.pnl * HUNDRED:.2f} %"),
    )


def _holding(position: Position, snapshot: IndicatorSnapshot) -> str:
    close = snapshot.candle.close
    pnl = (close - position.avg_price) / position.avg_price * HUNDRED
    vs_hwm = (close - position.high_water_mark) / position.high_water_mark * HUNDRED
    return f"holding (PnL {pnl:.2f} %, vs HWM {vs_hwm:.2f} %)"


def _entry_signal(snapshot: IndicatorSnapshot, decision: EntryDecision) -> EntrySignal:
    return EntrySignal(
        ts_event=snapshot.ts_event,
        symbol=snapshot.symbol,
        price=snapshot.candle.close,
        regime=snapshot.regime,
        reason=decision.reason,
        passed_checks=decision.passed_checks,
        snapshot=snapshot,
    )


def _exit_signal(snapshot: IndicatorSnapshot, position: Position, decision: ExitDecision) -> ExitSignal:
    assert decision.reason is not None
    return ExitSignal(
        ts_event=snapshot.ts_event,
        symbol=snapshot.symbol,
        price=snapshot.candle.close,
        exit_reason=decision.reason,
        entry_regime=position.entry_regime,
        regime=snapshot.regime,
        avg_price=position.avg_price,
        quantity=position.quantity,
        high_water_mark=decision.new_hwm,
        opened_at=position.opened_at,
        position_id=position.position_id,
        snapshot=snapshot,
    )


def status_payload(
    state: SymbolState, snapshot: IndicatorSnapshot, evaluation: Evaluation
) -> dict[str, object]:
    """The ``bot:status:<SYM>`` JSON of §6.6 (plus the passed checks and a detail line)."""
    close = snapshot.candle.close
    position = state.position
    pnl_pct = None
    if position is not None and position.avg_price > 0:
        pnl_pct = float((close - position.avg_price) / position.avg_price * HUNDRED)
    return {
        "timestamp": snapshot.ts_event.isoformat(),
        "symbol": snapshot.symbol,
        "current_price": float(close),
        "regime": snapshot.regime.value,
        "indicators": {
            "rsi": snapshot.rsi_14,
            "ma_trend": snapshot.ma_20,
            "hwm": float(position.high_water_mark) if position is not None else 0,
        },
        "position": {
            "has_position": position is not None,
            "avg_price": float(position.avg_price) if position is not None else None,
            "quantity": float(position.quantity) if position is not None else None,
            "pnl_pct": pnl_pct,
            "regime": position.entry_regime.value if position is not None else None,
        },
        "action": evaluation.action.value,
        "reason": evaluation.reason,
        "passed_checks": list(evaluation.passed_checks),
        "detail": evaluation.detail,
    }
