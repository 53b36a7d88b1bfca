"""Provenance at the money path: an order is filled only as risk recorded it and the agent confirmed it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import AlertLevel, AlertType, OrderApproved, RiskAlert, Side
from coinpilot.errors import RefusedMessage
from services.executor.provenance import (
    AMOUNT_ABOVE_SIZED,
    NOT_AS_PROPOSED,
    NOT_CONFIRMED,
    NOT_PROPOSED,
    Proposal,
    Provenance,
    check_provenance,
)
from tests.unit.executor.factories import T0, buy_order, sell_order

D = Decimal
BTC_BUY_ID = "KRW-BTC:2026-03-02T01:00Z:buy"
BUY = buy_order("100000000", "1000000")
SELL = sell_order("103000000", opened_by=BTC_BUY_ID, quantity="0.01", avg_price="1", high_water_mark="1")


def proposed(order: OrderApproved, amount: str | None = "1000000", review: bool = True) -> Proposal:
    """Risk's record of ``order`` as it approved it."""
    return Proposal(
        symbol=order.symbol,
        side=order.side,
        amount=None if amount is None else D(amount),
        reference_price=order.reference_price,
        needs_confirmation=review,
        ts_event=order.ts_event,
    )


CONFIRMED_BUY = Provenance(proposed(BUY), "CONFIRM")
APPROVED_EXIT = Provenance(proposed(SELL, amount=None, review=False))


def test_a_confirmed_buy_within_its_sized_amount_and_a_recorded_exit_pass() -> None:
    assert check_provenance(BUY, CONFIRMED_BUY) is None
    assert check_provenance(BUY.model_copy(update={"amount": D("999999.99")}), CONFIRMED_BUY) is None
    assert check_provenance(SELL, APPROVED_EXIT) is None
    # a BUY that risk routed past the agent needs no verdict
    assert check_provenance(BUY, Provenance(proposed(BUY, review=False))) is None


@pytest.mark.parametrize(
    ("order", "provenance", "rule", "words"),
    [
        pytest.param(BUY, Provenance(), NOT_PROPOSED, "risk recorded no approval", id="buy-never-proposed"),
        pytest.param(SELL, Provenance(), NOT_PROPOSED, "risk recorded no approval", id="exit-never-approved"),
        pytest.param(
            BUY.model_copy(update={"amount": D("1000000.00000001")}),
            CONFIRMED_BUY,
            AMOUNT_ABOVE_SIZED,
            "BUY amount 1000000.00000001, risk sized 1000000",
            id="buy-above-its-sized-amount",
        ),
        pytest.param(
            BUY.model_copy(update={"amount": None}),
            CONFIRMED_BUY,
            AMOUNT_ABOVE_SIZED,
            "BUY amount None",
            id="buy-without-an-amount",
        ),
        pytest.param(
            BUY, Provenance(proposed(BUY)), NOT_CONFIRMED, "is no decision, not CONFIRM", id="no-verdict"
        ),
        pytest.param(
            BUY, Provenance(proposed(BUY), "REJECT"), NOT_CONFIRMED, "is REJECT", id="agent-rejected"
        ),
        pytest.param(BUY, Provenance(proposed(BUY), "SKIP"), NOT_CONFIRMED, "is SKIP", id="agent-skipped"),
        pytest.param(
            BUY.model_copy(update={"reference_price": D("1")}),
            CONFIRMED_BUY,
            NOT_AS_PROPOSED,
            "reference price",
            id="other-reference-price",
        ),
        pytest.param(
            BUY.model_copy(update={"ts_event": T0 + timedelta(hours=3)}),
            CONFIRMED_BUY,
            NOT_AS_PROPOSED,
            "2026-03-02T04:00:00+00:00",
            id="other-time",
        ),
        pytest.param(
            BUY.model_copy(update={"side": Side.SELL}),
            CONFIRMED_BUY,
            NOT_AS_PROPOSED,
            "SELL",
            id="proposed-buy-sent-as-a-sell",
        ),
        pytest.param(
            SELL.model_copy(update={"symbol": "KRW-ETH"}),
            APPROVED_EXIT,
            NOT_AS_PROPOSED,
            "KRW-ETH",
            id="exit-of-another-symbol",
        ),
    ],
)
def test_an_order_not_as_risk_recorded_it_is_refused_with_its_rule(
    order: OrderApproved, provenance: Provenance, rule: str, words: str
) -> None:
    refusal = check_provenance(order, provenance)
    assert refusal is not None and refusal.rule == rule, refusal
    assert words in refusal.message


def test_a_reference_price_finer_than_the_record_is_compared_at_the_records_scale() -> None:
    record = replace(proposed(BUY), reference_price=D("123.45678901"))
    order = BUY.model_copy(update={"reference_price": D("123.456789005")})  # NUMERIC(20,8) rounds up
    assert check_provenance(order, Provenance(record, "CONFIRM")) is None


def test_a_refusal_raises_a_refused_message_carrying_a_critical_alert() -> None:
    refusal = check_provenance(BUY, Provenance())
    assert refusal is not None
    error = refusal.error()
    assert isinstance(error, RefusedMessage) and error.rule == NOT_PROPOSED
    assert str(error) == f"{NOT_PROPOSED}: risk recorded no approval of {BUY.order_id}"
    assert error.alerts == (
        RiskAlert(
            ts_event=BUY.ts_event,
            type=AlertType.ORDER_REFUSED,
            level=AlertLevel.CRITICAL,
            message=f"order {BUY.order_id} refused ({NOT_PROPOSED}): risk recorded no approval of "
            f"{BUY.order_id}",
            symbol="KRW-BTC",
        ),
    )
