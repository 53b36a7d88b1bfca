"""The risk state machine: sizing (§4.1 rebuild), verdicts, fills, cooldown, halt, pending orders.

Acceptance case H of BEHAVIOUR §13.3 is marked ``H`` in the test names.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from coinpilot.analytics.volatility import VolatilityState, VolatilityStatus
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    EntrySignal,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Regime,
    RejectReason,
    RejectStage,
    RiskAlert,
    Side,
    order_id_for,
)
from services.risk.core import (
    DailyState,
    Decision,
    Holding,
    Ledger,
    RiskState,
    VolatilityReading,
    initial_state,
    on_entry_signal,
    on_exit_signal,
    on_fill,
    on_rejection,
    reference_equity,
    repeated_fill,
    size_order,
)
from tests.unit.risk.factories import CODE_DEFAULTS, T0, YAML, entry, exit_signal, fill

TEN_M = Decimal(10_000_000)
CASH = Ledger(balance=TEN_M)
CALM = VolatilityReading()
HIGH = VolatilityReading(VolatilityState("KRW-BTC", 2.4, True, T0 - timedelta(hours=3), 2160, 1.5))
START = initial_state(T0, YAML)


def buy_order_id(signal: EntrySignal) -> str:
    return order_id_for(signal.symbol, signal.ts_event, Side.BUY)


def loss(n: int, pnl: str = "-100", at_minutes: int = 0) -> object:
    return fill(
        Side.SELL,
        order_id=f"KRW-BTC:2026-03-02T1{n}:00Z:sell",
        realized_pnl=pnl,
        at=T0 + timedelta(minutes=at_minutes),
    )


def only(step_out: tuple[object, ...], kind: type) -> object:
    (message,) = [m for m in step_out if isinstance(m, kind)]
    return message


class TestSizing:
    @pytest.mark.parametrize(
        ("regime", "reading", "expected"),
        [
            pytest.param(Regime.BULL, CALM, "2000000", id="H-bull-20pct"),
            pytest.param(Regime.SIDEWAYS, CALM, "1800000", id="H-sideways-18pct"),
            pytest.param(Regime.BEAR, CALM, "1400000", id="H-bear-14pct"),
            pytest.param(Regime.BULL, HIGH, "1000000", id="H-bull-halved-when-volatile"),
            pytest.param(Regime.SIDEWAYS, HIGH, "900000", id="H-sideways-halved-when-volatile"),
            pytest.param(Regime.BEAR, HIGH, "700000", id="H-bear-halved-when-volatile"),
        ],
    )
    def test_yaml_sizing_of_case_h_is_proposed(
        self, regime: Regime, reading: VolatilityReading, expected: str
    ) -> None:
        step = on_entry_signal(START, entry(regime=regime), CASH, reading, YAML)
        proposal = only(step.out, OrderProposed)
        assert isinstance(proposal, OrderProposed)
        assert proposal.amount == Decimal(expected)
        assert proposal.vol_multiplier == (Decimal("0.5") if reading is HIGH else Decimal(1))

    def test_cash_and_exposure_caps_are_10m_less_buffer_and_10m(self) -> None:
        sizing = size_order(
            ref=TEN_M,
            balance=TEN_M,
            exposure=Decimal(0),
            ratio=Decimal(1),
            multiplier=Decimal(1),
            params=YAML,
        )
        assert (sizing.amount, sizing.reason) == (Decimal(2_000_000), None)

    @pytest.mark.parametrize(
        ("balance", "exposure", "expected"),
        [
            pytest.param("10000000", "10000000", RejectReason.EXPOSURE_LIMIT_REACHED, id="no-exposure-room"),
            pytest.param("0", "0", RejectReason.CASH_INSUFFICIENT, id="no-cash"),
        ],
    )
    def test_nothing_to_buy_is_a_sizing_rejection(
        self, balance: str, exposure: str, expected: RejectReason
    ) -> None:
        sizing = size_order(
            ref=TEN_M,
            balance=Decimal(balance),
            exposure=Decimal(exposure),
            ratio=Decimal(1),
            multiplier=Decimal(1),
            params=YAML,
        )
        assert sizing.reason is expected

    def test_the_amount_is_the_smallest_cap(self) -> None:
        sizing = size_order(
            ref=TEN_M,
            balance=Decimal(500_000),
            exposure=Decimal(0),
            ratio=Decimal(1),
            multiplier=Decimal(1),
            params=YAML,
        )
        assert sizing.amount == Decimal("499000")

    def test_unknown_regime_has_no_size(self) -> None:
        step = on_entry_signal(START, entry(regime=Regime.UNKNOWN), CASH, CALM, YAML)
        assert only(step.out, OrderRejected).reason is RejectReason.ORDER_AMOUNT_NOT_POSITIVE  # type: ignore[attr-defined]


class TestVolatilityMultiplier:
    @pytest.mark.parametrize(
        ("reading", "status", "amount"),
        [
            pytest.param(CALM, VolatilityStatus.MISSING, "2000000", id="no-state-is-full-size"),
            pytest.param(HIGH, VolatilityStatus.HIGH, "1000000", id="fresh-high-halves"),
            pytest.param(
                VolatilityReading(replace(HIGH.state, as_of=T0 - timedelta(hours=36))),  # type: ignore[type-var]
                VolatilityStatus.HIGH,
                "1000000",
                id="exactly-36h-old-is-still-fresh",
            ),
            pytest.param(
                VolatilityReading(replace(HIGH.state, as_of=T0 - timedelta(hours=36, minutes=1))),  # type: ignore[type-var]
                VolatilityStatus.STALE,
                "2000000",
                id="older-than-36h-is-stale",
            ),
            pytest.param(
                VolatilityReading(None, available=False),
                VolatilityStatus.UNAVAILABLE,
                "2000000",
                id="redis-down",
            ),
            pytest.param(
                VolatilityReading(replace(HIGH.state, as_of=T0 + timedelta(hours=1))),  # type: ignore[type-var]
                VolatilityStatus.NOT_YET_VALID,
                "2000000",
                id="a-later-fit-does-not-apply",
            ),
        ],
    )
    def test_the_multiplier_changes_the_proposed_size(
        self, reading: VolatilityReading, status: VolatilityStatus, amount: str
    ) -> None:
        step = on_entry_signal(START, entry(), CASH, reading, YAML)
        assert step.volatility is status
        assert only(step.out, OrderProposed).amount == Decimal(amount)  # type: ignore[attr-defined]


class TestPendingOrders:
    def test_a_second_entry_signal_before_the_fill_is_rejected_order_pending(self) -> None:
        first = on_entry_signal(START, entry(), CASH, CALM, YAML)
        second = on_entry_signal(first.state, entry(at=T0 + timedelta(minutes=1)), CASH, CALM, YAML)
        rejected = only(second.out, OrderRejected)
        assert rejected.reason is RejectReason.ORDER_PENDING  # type: ignore[attr-defined]
        assert second.audits == ()

    def test_the_buy_fill_frees_the_symbol_and_counts_a_buy(self) -> None:
        first = on_entry_signal(START, entry(), CASH, CALM, YAML)
        after = on_fill(first.state, fill(Side.BUY, order_id=buy_order_id(entry())), YAML).state
        assert after.pending_orders == {}
        assert (after.daily.buy_count, after.daily.trade_count, after.daily.sell_count) == (1, 1, 0)

    def test_an_agent_rejection_frees_the_symbol(self) -> None:
        first = on_entry_signal(START, entry(), CASH, CALM, YAML)
        rejected = OrderRejected(
            ts_event=T0, order_id=buy_order_id(entry()), symbol="KRW-BTC", side=Side.BUY,
            stage=RejectStage.AGENT, reason=RejectReason.AI_REJECTED,
        )  # fmt: skip
        assert on_rejection(first.state, rejected).pending_orders == {}

    def test_risks_own_rejection_changes_nothing(self) -> None:
        first = on_entry_signal(START, entry(), CASH, CALM, YAML)
        mine = OrderRejected(
            ts_event=T0, order_id=buy_order_id(entry()), symbol="KRW-BTC", side=Side.BUY,
            stage=RejectStage.RISK, reason=RejectReason.ORDER_PENDING,
        )  # fmt: skip
        assert on_rejection(first.state, mine) == first.state

    def test_a_pending_order_expires_after_the_timeout(self) -> None:
        first = on_entry_signal(START, entry(), CASH, CALM, YAML)
        at = T0 + YAML.pending_timeout + timedelta(minutes=1)
        later = on_entry_signal(first.state, entry(at=at), CASH, CALM, YAML)
        assert isinstance(later.out[0], OrderProposed)

    def test_pending_orders_of_other_symbols_do_not_block(self) -> None:
        first = on_entry_signal(START, entry(), CASH, CALM, YAML)
        other = on_entry_signal(first.state, entry(symbol="KRW-ETH"), CASH, CALM, YAML)
        assert isinstance(other.out[0], OrderProposed)
        assert set(other.state.pending_orders) == {"KRW-BTC", "KRW-ETH"}


class TestCooldown:
    def test_h_three_losses_start_a_cooldown_with_one_critical_alert(self) -> None:
        state = START
        alerts: list[object] = []
        for n in range(3):
            step = on_fill(state, loss(n), CODE_DEFAULTS)
            state = step.state
            alerts.extend(step.out)
        assert state.cooldown_until == T0 + timedelta(hours=2)
        assert state.consecutive_losses == 0
        (alert,) = alerts
        assert isinstance(alert, RiskAlert)
        assert (alert.type, alert.level) == (AlertType.COOLDOWN, AlertLevel.CRITICAL)
        assert step.audits[0].violation_type == "COOLDOWN_STARTED"
        blocked = on_entry_signal(state, entry(at=T0 + timedelta(minutes=5)), CASH, CALM, CODE_DEFAULTS)
        assert only(blocked.out, OrderRejected).reason is RejectReason.COOLDOWN_ACTIVE  # type: ignore[attr-defined]
        assert blocked.audits[0].violation_type == "COOLDOWN_ACTIVE"

    def test_a_profit_or_zero_resets_the_streak(self) -> None:
        state = on_fill(on_fill(START, loss(0), YAML).state, loss(1), YAML).state
        assert state.consecutive_losses == 2
        assert on_fill(state, loss(2, pnl="0"), YAML).state.consecutive_losses == 0

    def test_a_partial_exit_counts_its_loss_today_but_the_streak_waits_for_the_closing_leg(self) -> None:
        state = replace(START, consecutive_losses=2)
        partial = loss(0).model_copy(update={"position_quantity_after": Decimal("0.5")})
        step = on_fill(state, partial, YAML)
        assert step.out == () and step.state.cooldown_until is None
        assert step.state.consecutive_losses == 2
        assert step.state.daily.total_pnl == state.daily.total_pnl + partial.realized_pnl
        assert step.state.daily.sell_count == state.daily.sell_count + 1
        assert repeated_fill(step.state, partial, YAML) == ()
        closing = on_fill(step.state, loss(1), YAML)  # the rest, sold at a loss: the third losing position
        assert closing.state.cooldown_until is not None and len(closing.out) == 1

    def test_the_threshold_comes_from_the_config(self) -> None:
        params = replace(YAML, cooldown_after_losses=2)
        state = on_fill(on_fill(START, loss(0), params).state, loss(1), params).state
        assert state.cooldown_until == T0 + timedelta(hours=2)

    def test_the_streak_and_cooldown_survive_the_trading_day_boundary(self) -> None:
        late = T0.replace(hour=23, minute=30)
        state = replace(START, consecutive_losses=2)
        step = on_fill(state, fill(Side.SELL, order_id="x:sell", realized_pnl="-5", at=late), YAML)
        assert step.state.cooldown_until == late + timedelta(hours=2)
        next_day = on_entry_signal(step.state, entry(at=late + timedelta(minutes=45)), CASH, CALM, YAML)
        assert next_day.state.daily.day == (late + timedelta(days=1)).date()
        assert only(next_day.out, OrderRejected).reason is RejectReason.COOLDOWN_ACTIVE  # type: ignore[attr-defined]

    def test_the_cooldown_ends_exactly_at_its_end(self) -> None:
        state = replace(START, cooldown_until=T0)
        assert isinstance(on_entry_signal(state, entry(), CASH, CALM, YAML).out[0], OrderProposed)


class TestDailyLossHalt:
    def test_h_a_realised_loss_of_60000_halts_trading_with_a_critical_alert(self) -> None:
        ledger = Ledger(balance=Decimal(1_000_000))
        state = on_fill(START, loss(0, pnl="-60000"), CODE_DEFAULTS).state
        step = on_entry_signal(state, entry(), ledger, CALM, CODE_DEFAULTS)
        rejected, alert = step.out
        assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.MAX_DAILY_LOSS
        assert isinstance(alert, RiskAlert) and alert.type is AlertType.DAILY_LOSS_HALT
        assert alert.level is AlertLevel.CRITICAL
        assert step.state.daily.is_trading_halted
        assert [a.violation_type for a in step.audits] == ["MAX_DAILY_LOSS", "DAILY_LOSS_HALT"]
        again = on_entry_signal(step.state, entry(symbol="KRW-ETH"), ledger, CALM, CODE_DEFAULTS)
        assert only(again.out, OrderRejected).reason is RejectReason.TRADING_HALTED  # type: ignore[attr-defined]
        assert again.out[1:] == ()

    def test_exits_pass_while_halted(self) -> None:
        halted = replace(
            START, daily=replace(START.daily, is_trading_halted=True), cooldown_until=T0 + timedelta(hours=1)
        )
        step = on_exit_signal(halted, exit_signal(), YAML)
        (approved,) = step.out
        assert isinstance(approved, OrderApproved)
        assert (approved.side, approved.approved_by, approved.quantity) == (
            Side.SELL,
            RejectStage.RISK,
            Decimal(2),
        )
        assert approved.order_id == "KRW-BTC:2026-03-02T12:00Z:sell"
        assert step.decision is Decision.APPROVED

    def test_the_halt_ends_at_the_trading_day_boundary(self) -> None:
        halted = replace(
            START, daily=replace(START.daily, is_trading_halted=True, total_pnl=Decimal(-999999))
        )
        tomorrow = T0.replace(hour=0) + timedelta(days=1)
        step = on_entry_signal(halted, entry(at=tomorrow), CASH, CALM, YAML)
        assert isinstance(step.out[0], OrderProposed)
        assert step.state.daily == DailyState(tomorrow.date())

    def test_a_later_boundary_keeps_late_utc_evening_in_the_same_trading_day(self) -> None:
        from datetime import time

        params = replace(YAML, day_boundary=time(15, 0))
        halted = replace(
            initial_state(T0, params), daily=replace(initial_state(T0, params).daily, is_trading_halted=True)
        )
        step = on_entry_signal(halted, entry(at=T0.replace(hour=14, minute=59)), CASH, CALM, params)
        assert only(step.out, OrderRejected).reason is RejectReason.TRADING_HALTED  # type: ignore[attr-defined]
        step = on_entry_signal(halted, entry(at=T0.replace(hour=15)), CASH, CALM, params)
        assert isinstance(step.out[0], OrderProposed)


class TestDailyCounts:
    def test_h_ten_buys_reach_the_daily_limit(self) -> None:
        state = replace(START, daily=replace(START.daily, buy_count=10))
        step = on_entry_signal(state, entry(), Ledger(balance=Decimal(1_000_000)), CALM, CODE_DEFAULTS)
        assert only(step.out, OrderRejected).reason is RejectReason.MAX_DAILY_TRADES  # type: ignore[attr-defined]

    def test_h_sells_do_not_count_toward_the_limit(self) -> None:
        state = replace(START, daily=replace(START.daily, buy_count=5, sell_count=20))
        step = on_entry_signal(state, entry(), Ledger(balance=Decimal(1_000_000)), CALM, CODE_DEFAULTS)
        assert isinstance(step.out[0], OrderProposed)

    def test_a_sell_counts_its_realised_pnl(self) -> None:
        step = on_fill(START, loss(0, pnl="-12.5"), YAML)
        daily = step.state.daily
        assert (daily.sell_count, daily.trade_count, daily.buy_count, daily.total_pnl) == (
            1,
            1,
            0,
            Decimal("-12.5"),
        )


class TestLedger:
    def test_exposure_prices_positions_at_the_latest_seen_price_or_their_average(self) -> None:
        ledger = Ledger(
            balance=Decimal(1000),
            positions={
                "KRW-BTC": Holding(Decimal(2), Decimal(100)),
                "KRW-ETH": Holding(Decimal(1), Decimal(50)),
            },
            prices={"KRW-BTC": Decimal(110)},
        )
        assert ledger.exposure() == Decimal(270)
        assert reference_equity(ledger, YAML) == Decimal(1270)

    def test_a_fixed_reference_equity_wins(self) -> None:
        assert reference_equity(CASH, replace(YAML, reference_equity=Decimal(5))) == Decimal(5)

    def test_todays_snapshot_wins_over_a_fresh_computation(self) -> None:
        assert reference_equity(replace(CASH, reference_equity=Decimal(7)), YAML) == Decimal(7)

    def test_a_missing_account_is_rejected(self) -> None:
        step = on_entry_signal(START, entry(), Ledger(balance=None), CALM, YAML)
        assert only(step.out, OrderRejected).reason is RejectReason.ACCOUNT_MISSING  # type: ignore[attr-defined]

    def test_a_held_symbol_is_a_duplicate_and_audited(self) -> None:
        ledger = Ledger(balance=TEN_M, positions={"KRW-BTC": Holding(Decimal(1), Decimal(100))})
        step = on_entry_signal(START, entry(), ledger, CALM, YAML)
        assert only(step.out, OrderRejected).reason is RejectReason.DUPLICATE_POSITION  # type: ignore[attr-defined]
        (audit,) = step.audits
        assert (audit.violation_type, audit.order_id) == (
            "DUPLICATE_POSITION",
            "KRW-BTC:2026-03-02T12:00Z:buy",
        )


def test_the_proposal_carries_the_signal_and_its_close() -> None:
    signal = entry(price="123.45")
    proposal = only(on_entry_signal(START, signal, CASH, CALM, YAML).out, OrderProposed)
    assert isinstance(proposal, OrderProposed)
    assert (proposal.signal, proposal.reference_price, proposal.ts_event) == (signal, Decimal("123.45"), T0)
    assert proposal.order_id == "KRW-BTC:2026-03-02T12:00Z:buy"


def test_state_is_never_mutated() -> None:
    before = RiskState(DailyState(T0.date()))
    on_entry_signal(before, entry(), CASH, CALM, YAML)
    assert before == RiskState(DailyState(T0.date()))


class TestRedeliveredFills:
    def test_the_fill_that_started_the_cooldown_reissues_the_same_alert(self) -> None:
        state = START
        for n in range(3):
            step = on_fill(state, loss(n), YAML)
            state = step.state
        assert step.out and repeated_fill(state, loss(2), YAML) == step.out

    def test_a_fill_that_started_nothing_reissues_nothing(self) -> None:
        state = on_fill(START, loss(0), YAML).state
        assert repeated_fill(state, loss(0), YAML) == ()
        assert repeated_fill(state, fill(Side.BUY, order_id="b"), YAML) == ()


class TestImplausiblePrice:
    def test_a_zero_price_is_rejected_before_sizing_audited_and_leaves_nothing_pending(self) -> None:
        step = on_entry_signal(START, entry(price="0"), CASH, CALM, YAML)
        rejected = only(step.out, OrderRejected)
        assert (rejected.reason, rejected.stage, rejected.order_id) == (  # type: ignore[attr-defined]
            RejectReason.IMPLAUSIBLE_PRICE,
            RejectStage.RISK,
            buy_order_id(entry()),
        )
        assert rejected.message == "signal price 0 <= 0"  # type: ignore[attr-defined]
        assert step.state.pending_orders == {} and step.decision is Decision.REJECTED
        assert [a.violation_type for a in step.audits] == ["IMPLAUSIBLE_PRICE"]

    def test_a_price_far_from_the_recorded_close_is_rejected_and_a_near_one_proposed(self) -> None:
        far = on_entry_signal(START, entry(price="100"), CASH, CALM, YAML, recorded_close=Decimal(50))
        assert only(far.out, OrderRejected).reason is RejectReason.IMPLAUSIBLE_PRICE  # type: ignore[attr-defined]
        near = on_entry_signal(START, entry(price="100"), CASH, CALM, YAML, recorded_close=Decimal(100))
        assert only(near.out, OrderProposed).reference_price == Decimal(100)  # type: ignore[attr-defined]

    def test_the_price_is_checked_before_a_pending_order(self) -> None:
        pending = replace(
            START, pending_orders={"KRW-BTC": buy_order_id(entry(at=T0 - timedelta(minutes=1)))}
        )
        step = on_entry_signal(pending, entry(price="-1"), CASH, CALM, YAML)
        assert only(step.out, OrderRejected).reason is RejectReason.IMPLAUSIBLE_PRICE  # type: ignore[attr-defined]
        assert step.state.pending_orders == pending.pending_orders
