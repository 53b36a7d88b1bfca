"""Paper fills (BEHAVIOUR §6, rebuild): every figure below is computed by hand in the comment."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import ExitReason, Fill, OrderRejected, Regime, RejectReason, RejectStage, Side
from services.executor.core import (
    Execution,
    FillOutcome,
    FillParams,
    Ledger,
    Position,
    Rejection,
    apply_execution,
    buy_quantity,
    fill_order,
    marks_dust,
    quote_paper,
    refuse_duplicate_buy,
    refuse_out_of_band,
    slipped_price,
)
from tests.unit.executor.factories import T0, buy_order, paper_fill, sell_order

D = Decimal
UPBIT = FillParams(fee_rate=D("0.0005"))
NO_FEE = FillParams(fee_rate=D(0))
UPBIT_10BPS = FillParams(fee_rate=D("0.0005"), slippage_bps=D(10))
BTC_BUY_ID = "KRW-BTC:2026-03-02T01:00Z:buy"


def krw(balance: str, position: Position | None = None) -> Ledger:
    return Ledger("KRW", D(balance), position)


def btc_position(quantity: str, avg: str, hwm: str | None = None, opened_by: str = BTC_BUY_ID) -> Position:
    return Position("KRW-BTC", D(quantity), D(avg), Regime.BULL, D(hwm or avg), T0, opened_by)


def filled(outcome: FillOutcome | Rejection) -> FillOutcome:
    assert isinstance(outcome, FillOutcome), outcome
    return outcome


@dataclass(frozen=True)
class BuyCase:
    price: str
    amount: str
    params: FillParams
    fill_price: str
    quantity: str
    amount_out: str
    fee: str
    balance_after: str
    symbol: str = "KRW-BTC"


BUYS = [
    # 1,000,000 / 100,000,000 = 0.01 BTC; fee 1,000,000 × 0.0005 = 500; 10,000,000 − 1,000,500
    pytest.param(
        BuyCase("100000000", "1000000", UPBIT, "100000000", "0.01", "1000000", "500", "8999500"),
        id="upbit-fee-on-round-numbers",
    ),
    pytest.param(
        BuyCase("100000000", "1000000", NO_FEE, "100000000", "0.01", "1000000", "0", "9000000"),
        id="zero-fee-is-the-original-behaviour",
    ),
    # 10 bps: 100,100,000; 1,000,000 / 100,100,000 = 0.009990009.. -> 0.00999000; × price = 999,999;
    # fee 499.9995; 10,000,000 − 999,999 − 499.9995 = 8,999,501.0005
    pytest.param(
        BuyCase(
            "100000000", "1000000", UPBIT_10BPS, "100100000", "0.00999", "999999", "499.9995", "8999501.0005"
        ),
        id="slippage-raises-the-price-and-floors-the-quantity",
    ),
    # 100,000 / 234.5 = 426.439232409.. -> 426.43923240; × 234.5 = 99,999.9999978;
    # fee 49.9999999989 rounds UP to 50.00000000; 10,000,000 − 100,049.9999978
    pytest.param(
        BuyCase(
            "234.5",
            "100000",
            UPBIT,
            "234.5",
            "426.4392324",
            "99999.9999978",
            "50",
            "9899950.0000022",
            symbol="KRW-DOGE",
        ),
        id="fee-rounds-up-at-the-eighth-decimal",
    ),
]


@pytest.mark.parametrize("case", BUYS)
def test_buy_fills_at_the_slipped_price_with_a_floored_quantity_and_a_fee(case: BuyCase) -> None:
    order = buy_order(case.price, case.amount, symbol=case.symbol)
    fill = filled(paper_fill(krw("10000000"), order, case.params)).fill
    assert (fill.fill_price, fill.quantity, fill.amount, fill.fee, fill.balance_after) == (
        D(case.fill_price),
        D(case.quantity),
        D(case.amount_out),
        D(case.fee),
        D(case.balance_after),
    )
    assert fill.amount == fill.fill_price * fill.quantity


def test_buy_opens_a_position_and_reports_it_whole() -> None:
    order = buy_order("100000000", "1000000")
    outcome = filled(paper_fill(krw("10000000"), order, UPBIT_10BPS))
    assert outcome.ledger == krw(
        "8999501.0005",
        Position("KRW-BTC", D("0.00999"), D("100100000"), Regime.BULL, D("100100000"), T0, BTC_BUY_ID),
    )
    assert outcome.fill == Fill(
        ts_event=T0,
        order_id=BTC_BUY_ID,
        symbol="KRW-BTC",
        side=Side.BUY,
        currency="KRW",
        decision_price=D("100000000"),
        fill_price=D("100100000"),
        quantity=D("0.00999"),
        amount=D("999999"),
        fee=D("499.9995"),
        balance_after=D("8999501.0005"),
        position_quantity_after=D("0.00999"),
        position_avg_price_after=D("100100000"),
        regime=Regime.BULL,
        high_water_mark=D("100100000"),
        opened_at=T0,
    )


def test_sell_closes_the_whole_position_and_realises_pnl_net_of_its_own_fee() -> None:
    # fill 103,000,000 × (1 − 0.001) = 102,897,000; amount × 0.00999 = 1,027,941.03;
    # fee 513.970515; gross (102,897,000 − 100,100,000) × 0.00999 = 27,942.03; net 27,428.059485;
    # balance 8,999,501.0005 + 1,027,941.03 − 513.970515 = 10,026,928.059985
    order = sell_order(
        "103000000",
        opened_by=BTC_BUY_ID,
        quantity="0.00999",
        avg_price="100100000",
        high_water_mark="104200000",
        exit_reason=ExitReason.TRAILING_STOP,
    )
    outcome = filled(
        paper_fill(krw("8999501.0005", btc_position("0.00999", "100100000")), order, UPBIT_10BPS)
    )
    assert outcome.ledger == krw("10026928.059985")
    assert outcome.fill == Fill(
        ts_event=T0 + timedelta(hours=5),
        order_id="KRW-BTC:2026-03-02T06:00Z:sell",
        symbol="KRW-BTC",
        side=Side.SELL,
        currency="KRW",
        decision_price=D("103000000"),
        fill_price=D("102897000"),
        quantity=D("0.00999"),
        amount=D("1027941.03"),
        fee=D("513.970515"),
        balance_after=D("10026928.059985"),
        position_quantity_after=D(0),
        position_avg_price_after=D(0),
        realized_pnl=D("27428.059485"),
        realized_pnl_gross=D("27942.03"),
        entry_avg_price=D("100100000"),
        regime=Regime.BULL,
        exit_reason=ExitReason.TRAILING_STOP,
        high_water_mark=D("104200000"),
        opened_at=T0,
    )


def test_a_round_trip_changes_cash_by_net_pnl_minus_the_buy_fee() -> None:
    buy = filled(paper_fill(krw("10000000"), buy_order("100000000", "1000000"), UPBIT_10BPS))
    sell = sell_order(
        "103000000",
        opened_by=BTC_BUY_ID,
        quantity="0.00999",
        avg_price="100100000",
        high_water_mark="103000000",
    )
    closed = filled(paper_fill(buy.ledger, sell, UPBIT_10BPS))
    assert closed.ledger.balance - D("10000000") == closed.fill.realized_pnl - buy.fill.fee


def test_stop_loss_keeps_the_real_high_water_mark_from_the_exit_signal() -> None:
    order = sell_order(
        "96000000",
        opened_by=BTC_BUY_ID,
        quantity="0.01",
        avg_price="100000000",
        high_water_mark="100800000",
        exit_reason=ExitReason.STOP_LOSS,
    )
    fill = filled(paper_fill(krw("9000000", btc_position("0.01", "100000000")), order, NO_FEE)).fill
    # gross (96,000,000 − 100,000,000) × 0.01 = −40,000; no fee
    assert (fill.high_water_mark, fill.exit_reason, fill.realized_pnl) == (
        D("100800000"),
        ExitReason.STOP_LOSS,
        D("-40000"),
    )


@pytest.mark.parametrize(
    ("ledger", "order", "params", "reason"),
    [
        # 1,000,000 + fee 500 > 1,000,000
        pytest.param(
            krw("1000000"),
            buy_order("100000000", "1000000"),
            UPBIT,
            RejectReason.INSUFFICIENT_BALANCE,
            id="buy-whose-fee-does-not-fit-is-refused",
        ),
        pytest.param(
            krw("999999.99"),
            buy_order("100000000", "1000000"),
            NO_FEE,
            RejectReason.INSUFFICIENT_BALANCE,
            id="buy-short-by-a-cent-is-refused",
        ),
        # 0.5 / 100,000,000 = 5e-9 < 1e-8
        pytest.param(
            krw("10000000"),
            buy_order("100000000", "0.5"),
            UPBIT,
            RejectReason.QUANTITY_TOO_SMALL,
            id="buy-below-one-satoshi-is-refused",
        ),
        pytest.param(
            krw("10000000"),
            sell_order("1", opened_by=BTC_BUY_ID, quantity="1", avg_price="1", high_water_mark="1"),
            UPBIT,
            RejectReason.NO_POSITION,
            id="sell-without-position-is-refused",
        ),
        pytest.param(
            krw("10000000", btc_position("0.01", "100000000", opened_by="KRW-BTC:2026-03-02T03:00Z:buy")),
            sell_order("1", opened_by=BTC_BUY_ID, quantity="1", avg_price="1", high_water_mark="1"),
            UPBIT,
            RejectReason.NO_POSITION,
            id="sell-for-an-earlier-position-is-refused",
        ),
    ],
)
def test_orders_that_cannot_be_filled_are_rejected_with_a_reason(
    ledger: Ledger, order, params: FillParams, reason: RejectReason
) -> None:
    outcome = paper_fill(ledger, order, params)
    assert isinstance(outcome, Rejection) and outcome.reason is reason
    rejected = outcome.message_out()
    assert rejected == OrderRejected(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        stage=RejectStage.EXECUTOR,
        reason=reason,
        message=outcome.message,
    )


def test_buy_with_the_exact_balance_and_no_fee_leaves_zero() -> None:
    outcome = filled(paper_fill(krw("1000000"), buy_order("100000000", "1000000"), NO_FEE))
    assert outcome.ledger.balance == 0


def test_a_buy_for_a_held_symbol_is_refused_before_it_is_quoted_or_booked() -> None:
    held = btc_position("0.01", "100000000", hwm="108000000")
    ledger = krw("10000000", held)
    order = buy_order("110000000", "1100000")
    refused = paper_fill(ledger, order, NO_FEE)
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.DUPLICATE_POSITION
    assert "KRW-BTC is already held (0.01 since" in refused.message and BTC_BUY_ID in refused.message
    assert refuse_duplicate_buy(ledger, order) == refused
    # a venue's execution for it is not booked either: the ledger is never averaged into
    execution = quote_paper(order, krw("10000000"), NO_FEE, order.reference_price)
    assert isinstance(execution, Execution)
    assert apply_execution(ledger, order, execution) == refused


def test_only_a_buy_for_a_held_symbol_is_a_duplicate() -> None:
    held = krw("10000000", btc_position("0.01", "100000000"))
    assert refuse_duplicate_buy(krw("10000000"), buy_order("110000000", "1100000")) is None
    sell = sell_order("110000000", opened_by=BTC_BUY_ID, quantity="0.01", avg_price="1", high_water_mark="1")
    assert refuse_duplicate_buy(held, sell) is None
    emptied = krw("10000000", btc_position("0", "100000000"))
    assert refuse_duplicate_buy(emptied, buy_order("110000000", "1100000")) is None


@pytest.mark.parametrize(
    ("reference", "side", "bps", "expected"),
    [
        pytest.param("0.0001234", Side.BUY, "7", "0.00012349", id="buy-rounds-up"),
        pytest.param("0.0001234", Side.SELL, "7", "0.00012331", id="sell-rounds-down"),
        pytest.param("234.5", Side.BUY, "3", "234.57035", id="exact-needs-no-rounding"),
        pytest.param("100", Side.SELL, "0", "100", id="zero-slippage-is-the-reference"),
    ],
)
def test_slipped_price_moves_against_the_account(reference: str, side: Side, bps: str, expected: str) -> None:
    assert slipped_price(D(reference), side, D(bps)) == D(expected)


def test_buy_quantity_never_rounds_up_even_when_the_quotient_is_a_hair_below_a_step() -> None:
    # 1 / 3 = 0.333..; and 0.99999999999 / 1 sits just under 1 -> 0.99999999
    assert buy_quantity(D(1), D(3)) == D("0.33333333")
    assert buy_quantity(D("0.99999999999"), D(1)) == D("0.99999999")


def test_a_live_venue_execution_is_booked_by_the_same_rules() -> None:
    order = buy_order("100000000", "1000000")
    execution = Execution(
        fill_price=D("100050000"), quantity=D("0.0099"), amount=D("990495"), fee=D("495.2475")
    )
    outcome = filled(apply_execution(krw("10000000"), order, execution))
    assert outcome.ledger.balance == D("10000000") - D("990495") - D("495.2475")


def test_quote_paper_refuses_a_buy_without_an_amount() -> None:
    order = buy_order("100", "1").model_copy(update={"amount": None})
    outcome = quote_paper(order, krw("100"), UPBIT, order.reference_price)
    assert isinstance(outcome, Rejection) and outcome.reason is RejectReason.NON_POSITIVE_AMOUNT


@pytest.mark.parametrize(
    ("fee_rate", "bps"),
    [pytest.param("-0.1", "0", id="negative-fee"), pytest.param("0", "10000", id="slippage-of-everything")],
)
def test_fill_params_refuse_nonsense(fee_rate: str, bps: str) -> None:
    with pytest.raises(ValueError):
        FillParams(fee_rate=D(fee_rate), slippage_bps=D(bps))


def test_the_fill_price_is_the_venues_quote_never_the_orders_price() -> None:
    # the order names 100,000,000; the recorded close is 101,000,000 (1 % away, inside the 2 % band)
    order = buy_order("100000000", "1010000")
    fill = filled(fill_order(krw("10000000"), order, NO_FEE, D("101000000"))).fill
    assert (fill.fill_price, fill.quantity) == (D("101000000"), D("0.01"))
    assert fill.decision_price == D("100000000")
    held = krw("10000000", btc_position("0.01", "100000000"))
    sell = sell_order("1", opened_by=BTC_BUY_ID, quantity="0.01", avg_price="1", high_water_mark="1")
    # a SELL naming 1 KRW sells at the quote, or not at all: 1 KRW is out of any band around it
    refused = fill_order(held, sell, NO_FEE, D("100000000"))
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.PRICE_OUT_OF_BAND


@pytest.mark.parametrize(
    ("quote", "band", "inside"),
    [
        pytest.param("102000000", "0.02", True, id="exactly-at-the-upper-edge"),
        pytest.param("98000000", "0.02", True, id="exactly-at-the-lower-edge"),
        pytest.param("102000000.00000001", "0.02", False, id="a-hair-above"),
        pytest.param("97999999.99999999", "0.02", False, id="a-hair-below"),
        pytest.param("105000000", "0.05", True, id="a-wider-band"),
        pytest.param("0", "0.02", False, id="a-zero-quote"),
    ],
)
def test_a_quote_out_of_the_band_around_the_reference_price_is_rejected(
    quote: str, band: str, inside: bool
) -> None:
    order = buy_order("100000000", "1000000")
    params = FillParams(fee_rate=D(0), price_band=D(band))
    rejected = refuse_out_of_band(order, D(quote), params.price_band)
    assert (rejected is None) is inside
    outcome = quote_paper(order, krw("10000000"), params, D(quote))
    assert isinstance(outcome, Rejection) is (not inside)
    if not inside:
        assert outcome == rejected and rejected is not None
        assert rejected.reason is RejectReason.PRICE_OUT_OF_BAND
        assert f"venue quote {D(quote)}" in rejected.message
        assert "reference price 100000000" in rejected.message


def test_the_band_must_be_positive() -> None:
    with pytest.raises(ValueError, match="price_band"):
        FillParams(price_band=D(0))


# -- partial exits and dust (live venue, issue 23) ---------------------------------------------


def test_a_partial_sell_books_what_executed_and_keeps_the_rest_open_at_the_same_average() -> None:
    # a market sell of 0.01 that ran out of book after 0.006 at 99,900,000: amount 599,400,
    # fee 299.7; gross (99,900,000 − 100,000,000) × 0.006 = −600; net −899.7;
    # balance 9,000,000 + 599,400 − 299.7 = 9,599,100.3; 0.004 left at 100,000,000
    order = sell_order(
        "99900000", opened_by=BTC_BUY_ID, quantity="0.01", avg_price="100000000", high_water_mark="101000000"
    )
    execution = Execution(fill_price=D("99900000"), quantity=D("0.006"), amount=D("599400"), fee=D("299.7"))
    outcome = filled(apply_execution(krw("9000000", btc_position("0.01", "100000000")), order, execution))

    assert outcome.ledger == krw(
        "9599100.3", btc_position("0.004", "100000000", hwm="101000000")
    )  # same id, opening time and average; the HWM the exit signal carried
    fill = outcome.fill
    assert (fill.quantity, fill.amount, fill.fee, fill.balance_after) == (
        D("0.006"), D("599400"), D("299.7"), D("9599100.3"),
    )  # fmt: skip
    assert (fill.realized_pnl_gross, fill.realized_pnl) == (D("-600"), D("-899.7"))
    assert (fill.position_quantity_after, fill.position_avg_price_after) == (D("0.004"), D("100000000"))
    assert fill.exit_reason is ExitReason.TAKE_PROFIT and fill.opened_at == T0
    # the rest is sold by the next exit like any position: it then closes
    rest = sell_order(
        "99800000", opened_by=BTC_BUY_ID, quantity="0.004", avg_price="100000000",
        high_water_mark="101000000", at=T0 + timedelta(hours=5, minutes=1),
    )  # fmt: skip
    closed = filled(paper_fill(outcome.ledger, rest, UPBIT))
    assert closed.ledger.position is None and closed.fill.quantity == D("0.004")
    assert closed.fill.position_quantity_after == 0


def test_the_paper_sell_still_sells_the_whole_position_and_says_nothing_is_left() -> None:
    order = sell_order(
        "100000000", opened_by=BTC_BUY_ID, quantity="0.01234567", avg_price="90000000", high_water_mark="1"
    )
    outcome = filled(paper_fill(krw("1", btc_position("0.01234567", "90000000")), order, UPBIT))
    assert outcome.ledger.position is None
    assert b'"position_quantity_after":"0.00000000"' in outcome.fill.to_json()


def test_an_execution_of_more_than_the_position_is_never_booked() -> None:
    order = sell_order("1", opened_by=BTC_BUY_ID, quantity="0.01", avg_price="1", high_water_mark="1")
    too_much = Execution(fill_price=D(1), quantity=D("0.02"), amount=D("0.02"), fee=D(0))
    with pytest.raises(ValueError, match="more than the position"):
        apply_execution(krw("1", btc_position("0.01", "1")), order, too_much)


def dust_sell(ledger_position: Position) -> Rejection:
    order = sell_order(
        "100000000", opened_by=BTC_BUY_ID, quantity=str(ledger_position.quantity), avg_price="1",
        high_water_mark="1",
    )  # fmt: skip
    return Rejection(order, RejectReason.BELOW_EXCHANGE_MINIMUM, "dust")


def test_a_sell_refused_below_the_exchange_minimum_marks_the_position_dust_once() -> None:
    held = btc_position("0.00001", "100000000")
    assert marks_dust(krw("1", held), dust_sell(held)) == replace(held, is_dust=True)
    # already dust, another reason, a BUY, or nothing held: nothing to mark
    assert marks_dust(krw("1", replace(held, is_dust=True)), dust_sell(held)) is None
    other = replace(dust_sell(held), reason=RejectReason.VENUE_NOTHING_EXECUTED)
    assert marks_dust(krw("1", held), other) is None
    assert marks_dust(krw("1"), dust_sell(held)) is None
    buy = Rejection(buy_order("100000000", "1000"), RejectReason.BELOW_EXCHANGE_MINIMUM, "small")
    assert marks_dust(krw("1", held), buy) is None


def test_a_buy_into_dust_is_no_duplicate_and_takes_the_dust_over_at_the_average_price() -> None:
    # dust 0.00003 at 90,000,000 (2,700 KRW) + 0.01 bought at 100,000,000 = 0.01003 at
    # (2,700 + 1,000,000) / 0.01003 = 99,970,089.73..., rounded up to 99,970,089.73080758
    dust = replace(
        btc_position("0.00003", "90000000", opened_by="KRW-BTC:2026-03-01T00:00Z:buy"), is_dust=True
    )
    ledger = krw("10000000", dust)
    order = buy_order("100000000", "1000000")
    assert refuse_duplicate_buy(ledger, order) is None
    outcome = filled(paper_fill(ledger, order, NO_FEE))
    position = outcome.ledger.position
    assert position == Position(
        "KRW-BTC", D("0.01003"), D("99970089.73080758"), Regime.BULL, D("100000000"), T0, BTC_BUY_ID
    )
    assert not position.is_dust and outcome.ledger.balance == D("9000000")
    assert (outcome.fill.quantity, outcome.fill.position_quantity_after) == (D("0.01"), D("0.01003"))
    assert outcome.fill.position_avg_price_after == D("99970089.73080758")
