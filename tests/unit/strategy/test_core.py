"""The strategy state machine: positions from fills, pending orders, HWM, redeliveries."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from coinpilot.contracts import (
    EntrySignal,
    ExitReason,
    ExitSignal,
    OrderRejected,
    Regime,
    RejectReason,
    RejectStage,
    Side,
    order_id_for,
    order_time,
)
from coinpilot.fill_ledger import recorded_from_row
from services.strategy.core import (
    Action,
    HoldReason,
    Position,
    SymbolState,
    absorb_holds,
    fill_refusal,
    on_fill,
    on_rejection,
    on_snapshot,
    status_payload,
)
from tests.unit.strategy.factories import PARAMS, SYMBOL, T0, fill, row_of, snap

MIN = timedelta(minutes=1)
EMPTY = SymbolState(SYMBOL)
BUY_ID = order_id_for(SYMBOL, T0, Side.BUY)


def held(hwm: str = "100", opened_delta: timedelta = timedelta(hours=1)) -> SymbolState:
    position = Position(BUY_ID, Decimal(100), Decimal(2), Regime.BULL, T0 - opened_delta, Decimal(hwm))
    return SymbolState(SYMBOL, position=position, last_candle_at=T0 - MIN)


def rejected(order_id: str) -> OrderRejected:
    return OrderRejected(
        ts_event=T0, order_id=order_id, symbol=SYMBOL, side=Side.BUY, stage=RejectStage.AGENT,
        reason=RejectReason.AI_REJECTED,
    )  # fmt: skip


class TestOrderIds:
    def test_order_id_names_symbol_minute_and_side(self) -> None:
        assert BUY_ID == "KRW-BTC:2026-03-02T12:00Z:buy"
        assert order_id_for(SYMBOL, T0, Side.SELL) == "KRW-BTC:2026-03-02T12:00Z:sell"

    def test_order_time_inverts_the_id(self) -> None:
        assert order_time(BUY_ID) == T0


class TestEntries:
    def test_a_valid_entry_emits_a_signal_carrying_the_snapshot_and_marks_it_pending(self) -> None:
        s = snap()
        step = on_snapshot(EMPTY, s, PARAMS)
        (signal,) = step.out
        assert isinstance(signal, EntrySignal)
        assert signal.snapshot == s and signal.price == Decimal("1005") and signal.ts_event == T0
        assert signal.passed_checks[0] == "Market Regime: BULL"
        assert step.state.pending_order_id == BUY_ID
        assert step.evaluation is not None and step.evaluation.action is Action.BUY

    def test_no_second_entry_signal_while_the_first_is_pending(self) -> None:
        first = on_snapshot(EMPTY, snap(), PARAMS)
        second = on_snapshot(first.state, snap(at=T0 + MIN), PARAMS)
        assert second.out == ()
        assert second.evaluation is not None and second.evaluation.reason == HoldReason.ENTRY_PENDING

    def test_a_rejection_of_the_pending_order_frees_the_symbol(self) -> None:
        first = on_snapshot(EMPTY, snap(), PARAMS)
        freed = on_rejection(first.state, rejected(BUY_ID))
        assert freed.pending_order_id is None
        assert len(on_snapshot(freed, snap(at=T0 + MIN), PARAMS).out) == 1

    def test_a_rejection_of_another_order_changes_nothing(self) -> None:
        first = on_snapshot(EMPTY, snap(), PARAMS)
        assert on_rejection(first.state, rejected("KRW-BTC:2026-03-02T11:00Z:buy")) == first.state

    def test_a_pending_order_expires_after_the_timeout_of_event_time(self) -> None:
        first = on_snapshot(EMPTY, snap(), PARAMS)
        at_timeout = on_snapshot(first.state, snap(at=T0 + PARAMS.pending_timeout), PARAMS)
        assert at_timeout.out == ()
        after = on_snapshot(at_timeout.state, snap(at=T0 + PARAMS.pending_timeout + MIN), PARAMS)
        assert len(after.out) == 1

    def test_an_unknown_regime_is_reported_as_waiting(self) -> None:
        step = on_snapshot(EMPTY, snap(regime=Regime.UNKNOWN), PARAMS)
        assert step.evaluation is not None
        assert (step.evaluation.action, step.evaluation.reason) == (Action.WAITING, "REGIME_UNKNOWN")
        assert step.state.last_reason == "REGIME_UNKNOWN"


class TestFills:
    def test_a_buy_fill_opens_the_position_with_its_regime_time_and_id(self) -> None:
        pending = on_snapshot(EMPTY, snap(), PARAMS).state
        state = on_fill(
            pending, fill(Side.BUY, order_id=BUY_ID, price="1005", quantity="0.5", regime=Regime.BULL)
        )
        assert state.pending_order_id is None
        assert state.position == Position(
            BUY_ID, Decimal("1005"), Decimal("0.5"), Regime.BULL, T0, Decimal("1005")
        )

    def test_a_redelivered_buy_fill_keeps_the_high_water_mark(self) -> None:
        state = held(hwm="120")
        again = on_fill(state, fill(Side.BUY, order_id=BUY_ID, price="100", quantity="2"))
        assert again.position is not None and again.position.high_water_mark == Decimal("120")

    def test_a_sell_fill_closes_the_position_and_clears_the_pending_exit(self) -> None:
        sell_id = order_id_for(SYMBOL, T0, Side.SELL)
        state = replace(held(), pending_order_id=sell_id)
        closed = on_fill(state, fill(Side.SELL, order_id=sell_id, realized_pnl="-3"))
        assert closed.position is None and closed.pending_order_id is None

    def test_a_sell_fill_without_a_position_changes_nothing(self) -> None:
        assert on_fill(EMPTY, fill(Side.SELL, order_id="x")) == EMPTY


class TestExits:
    def test_a_held_symbol_is_only_checked_for_exits(self) -> None:
        step = on_snapshot(held(), snap(close="100.5"), PARAMS)
        assert step.out == ()
        assert step.evaluation is not None and step.evaluation.action is Action.HOLD_POSITION

    def test_the_high_water_mark_is_updated_on_every_candle(self) -> None:
        step = on_snapshot(held(), snap(close="101.7"), PARAMS)
        assert step.state.position is not None and step.state.position.high_water_mark == Decimal("101.7")

    def test_an_exit_signal_carries_the_position_and_its_final_hwm(self) -> None:
        step = on_snapshot(held(hwm="101.0"), snap(close="97.97", rsi=50), PARAMS)
        (signal,) = step.out
        assert isinstance(signal, ExitSignal)
        assert signal.exit_reason is ExitReason.TRAILING_STOP
        assert (signal.avg_price, signal.quantity, signal.high_water_mark) == (
            Decimal(100),
            Decimal(2),
            Decimal("101.0"),
        )
        assert signal.position_id == BUY_ID and signal.entry_regime is Regime.BULL
        assert step.state.pending_order_id == order_id_for(SYMBOL, T0, Side.SELL)

    def test_no_second_exit_while_the_first_is_pending_but_the_hwm_still_moves(self) -> None:
        first = on_snapshot(held(), snap(close="96"), PARAMS)
        second = on_snapshot(first.state, snap(at=T0 + MIN, close="95"), PARAMS)
        assert second.out == ()
        assert second.evaluation is not None and second.evaluation.reason == HoldReason.EXIT_PENDING

    def test_a_rejected_exit_is_signalled_again_on_the_next_candle(self) -> None:
        first = on_snapshot(held(), snap(close="96"), PARAMS)
        freed = on_rejection(first.state, rejected(order_id_for(SYMBOL, T0, Side.SELL)))
        again = on_snapshot(freed, snap(at=T0 + MIN, close="96"), PARAMS)
        assert [type(m) for m in again.out] == [ExitSignal]

    def test_an_exit_refused_for_lack_of_a_position_drops_the_position_view(self) -> None:
        sell_id = order_id_for(SYMBOL, T0, Side.SELL)
        first = on_snapshot(held(), snap(close="96"), PARAMS)
        refused = OrderRejected(
            ts_event=T0, order_id=sell_id, symbol=SYMBOL, side=Side.SELL, stage=RejectStage.EXECUTOR,
            reason=RejectReason.NO_POSITION,
        )  # fmt: skip
        assert on_rejection(first.state, refused) == replace(
            first.state, pending_order_id=None, position=None
        )

    def test_a_partial_exit_keeps_the_rest_and_signals_it_on_the_next_candle_whatever_the_rules(
        self,
    ) -> None:
        sell_id = order_id_for(SYMBOL, T0, Side.SELL)
        first = on_snapshot(held(hwm="101.0"), snap(close="97.97", rsi=50), PARAMS)  # a trailing stop
        partial = fill(Side.SELL, order_id=sell_id, price="97.97", quantity="1.5").model_copy(
            update={"position_quantity_after": Decimal("0.5"), "position_avg_price_after": Decimal(100),
                    "exit_reason": ExitReason.TRAILING_STOP}
        )  # fmt: skip
        state = on_fill(first.state, partial)
        assert state.pending_order_id is None
        assert state.position == replace(
            first.state.position, quantity=Decimal("0.5"), exiting=ExitReason.TRAILING_STOP
        )
        # the next close would hold a fresh position (back above the trailing stop): the rest goes
        nxt = on_snapshot(state, snap(at=T0 + MIN, close="100.5"), PARAMS)
        (signal,) = nxt.out
        assert isinstance(signal, ExitSignal)
        assert (signal.exit_reason, signal.quantity, signal.position_id) == (
            ExitReason.TRAILING_STOP, Decimal("0.5"), BUY_ID,
        )  # fmt: skip
        assert nxt.state.pending_order_id == order_id_for(SYMBOL, T0 + MIN, Side.SELL)
        closed = on_fill(nxt.state, fill(Side.SELL, order_id=nxt.state.pending_order_id, at=T0 + MIN))
        assert closed.position is None and closed.pending_order_id is None

    def test_an_exit_refused_as_dust_closes_the_position_and_entries_resume(self) -> None:
        sell_id = order_id_for(SYMBOL, T0, Side.SELL)
        first = on_snapshot(held(), snap(close="96"), PARAMS)
        dust = OrderRejected(
            ts_event=T0, order_id=sell_id, symbol=SYMBOL, side=Side.SELL, stage=RejectStage.EXECUTOR,
            reason=RejectReason.BELOW_EXCHANGE_MINIMUM,
        )  # fmt: skip
        closed = on_rejection(first.state, dust)
        assert closed == replace(first.state, pending_order_id=None, position=None)
        # no exit for it again: the next candles are entry evaluations
        nxt = on_snapshot(closed, snap(at=T0 + MIN, close="96"), PARAMS)
        assert not any(isinstance(m, ExitSignal) for m in nxt.out)
        assert nxt.evaluation is not None and nxt.evaluation.action is not Action.HOLD_POSITION

    def test_a_buy_rejected_below_the_exchange_minimum_only_frees_the_symbol(self) -> None:
        pending = on_snapshot(EMPTY, snap(), PARAMS).state
        small = OrderRejected(
            ts_event=T0, order_id=BUY_ID, symbol=SYMBOL, side=Side.BUY, stage=RejectStage.EXECUTOR,
            reason=RejectReason.BELOW_EXCHANGE_MINIMUM,
        )  # fmt: skip
        assert on_rejection(pending, small) == replace(pending, pending_order_id=None)

    def test_an_unknown_regime_still_lets_the_stop_fire(self) -> None:
        step = on_snapshot(held(), snap(regime=Regime.UNKNOWN, close="97", rsi=None, ma=None), PARAMS)
        assert [m.exit_reason for m in step.out if isinstance(m, ExitSignal)] == [ExitReason.STOP_LOSS]

    def test_the_time_limit_uses_event_time(self) -> None:
        state = held(opened_delta=timedelta(hours=72))
        assert on_snapshot(state, snap(close="100", rsi=50), PARAMS).out == ()
        step = on_snapshot(state, snap(at=T0 + MIN, close="100", rsi=50), PARAMS)
        assert [m.exit_reason for m in step.out if isinstance(m, ExitSignal)] == [ExitReason.TIME_LIMIT]


class TestRedelivery:
    def test_a_redelivered_candle_re_issues_the_same_pending_signal(self) -> None:
        first = on_snapshot(EMPTY, snap(), PARAMS)
        again = on_snapshot(first.state, snap(), PARAMS)
        assert again.out == first.out
        assert again.state == first.state

    def test_a_redelivered_candle_after_the_fill_issues_nothing(self) -> None:
        first = on_snapshot(EMPTY, snap(), PARAMS)
        filled = on_fill(first.state, fill(Side.BUY, order_id=BUY_ID, price="1005"))
        assert on_snapshot(filled, snap(), PARAMS).out == ()

    def test_an_older_candle_is_ignored(self) -> None:
        state = held()
        step = on_snapshot(state, snap(at=T0 - timedelta(minutes=5), close="50"), PARAMS)
        assert step.out == () and step.state == state and step.evaluation is None


def test_the_status_payload_has_the_dashboard_fields() -> None:
    state = held(hwm="102")
    step = on_snapshot(state, snap(close="101"), PARAMS)
    assert step.evaluation is not None
    payload = status_payload(step.state, snap(close="101"), step.evaluation)
    assert payload["action"] == "HOLD (POS)" and payload["reason"] == "HOLDING"
    assert payload["indicators"] == {"rsi": 40, "ma_trend": 1000, "hwm": 102.0}
    assert payload["position"] == {
        "has_position": True, "avg_price": 100.0, "quantity": 2.0, "pnl_pct": 1.0, "regime": "BULL",
    }  # fmt: skip
    assert set(payload) >= {"timestamp", "symbol", "current_price", "regime"}


class TestFillRefusal:
    """A fill is applied only as the executor's ledger recorded it (``coinpilot.fill_ledger``)."""

    def test_a_fill_equal_to_its_row_is_applied(self) -> None:
        genuine = fill(Side.BUY, order_id=BUY_ID, price="1005")
        assert fill_refusal(EMPTY, genuine, recorded_from_row(row_of(genuine))) is None

    def test_a_fill_without_a_row_is_refused(self) -> None:
        forged = fill(Side.SELL, order_id=order_id_for(SYMBOL, T0, Side.SELL))
        assert fill_refusal(held(), forged, None) == f"no trading_history row for order {forged.order_id}"

    def test_a_recorded_sell_of_another_position_is_refused(self) -> None:
        old = fill(Side.SELL, order_id=order_id_for(SYMBOL, T0 - 60 * MIN, Side.SELL))
        recorded = recorded_from_row(row_of(old, position_id="KRW-BTC:2026-03-02T10:00Z:buy"))
        reason = fill_refusal(held(), old, recorded)
        assert reason == f"it closed position KRW-BTC:2026-03-02T10:00Z:buy, the strategy holds {BUY_ID}"

    def test_the_sell_of_the_held_position_is_applied(self) -> None:
        sell = fill(Side.SELL, order_id=order_id_for(SYMBOL, T0, Side.SELL))
        assert fill_refusal(held(), sell, recorded_from_row(row_of(sell, position_id=BUY_ID))) is None


def test_absorbing_a_run_of_holds_leaves_what_evaluating_each_leaves() -> None:
    """The fast path's step over holds (``absorb_holds``) equals ``on_snapshot`` candle by candle,
    in everything but the last hold reason (which the fast path never reports)."""
    closes = ["101", "101.5", "100.8"]
    stepped = held(hwm="101.2")
    for k, close in enumerate(closes, start=1):
        step = on_snapshot(stepped, snap(close=close, at=T0 + timedelta(minutes=k)), PARAMS)
        assert step.out == () and step.evaluation is not None and step.evaluation.reason == "HOLDING"
        stepped = step.state
    absorbed = absorb_holds(held(hwm="101.2"), Decimal("101.5"), T0 + timedelta(minutes=len(closes)))
    assert replace(absorbed, last_reason=stepped.last_reason) == stepped
    assert absorb_holds(held(hwm="103"), Decimal("101.5"), T0).position == held(hwm="103").position
