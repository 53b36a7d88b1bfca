"""What the ledger books for an Upbit order answer (services/executor/upbit/orders.py).

Orders are Upbit-format answers (KRW-BTC, fee 0.05 %, minimum total 5000 KRW)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.executor.upbit.models import Order, Side, parse_order
from services.executor.upbit.orders import (
    Booking,
    IncompleteAnswer,
    Outcome,
    Remainder,
    booking_delta,
    booking_of,
)

D = Decimal
MIN_TOTAL = D(5000)


def _trade(n: int, side: str, price: str, volume: str) -> dict[str, Any]:
    funds = D(price) * D(volume)
    return {
        "market": "KRW-BTC",
        "uuid": f"t-{n}",
        "price": price,
        "volume": volume,
        "funds": str(funds),
        "side": side,
    }


def _order(
    ord_type: str,
    side: str,
    state: str,
    *,
    price: str | None = None,
    volume: str | None = None,
    trades: list[dict[str, Any]] | None = None,
    paid_fee: str = "0",
    executed_funds: str | None = None,
    executed_volume: str | None = None,
) -> Order:
    trades = trades or []
    executed = executed_volume or str(sum((D(t["volume"]) for t in trades), D(0)))
    raw: dict[str, Any] = {
        "uuid": "u-1",
        "identifier": "KRW-BTC:20261204T1000:buy",
        "market": "KRW-BTC",
        "side": side,
        "ord_type": ord_type,
        "state": state,
        "price": price,
        "volume": volume,
        "remaining_volume": None if volume is None else str(D(volume) - D(executed)),
        "executed_volume": executed,
        "paid_fee": paid_fee,
        "created_at": "2026-12-04T19:00:00+09:00",
        "trades_count": len(trades),
        "trades": trades,
    }
    if executed_funds is not None:
        raw["executed_funds"] = executed_funds
    return parse_order(raw)


# A market buy of 1,500,000 KRW: 0.01 at 100,000,000 and 0.004995 at 100,100,000; 0.5 KRW is left.
MARKET_BUY_TRADES = [_trade(1, "bid", "100000000", "0.01"), _trade(2, "bid", "100100000", "0.004995")]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        pytest.param(
            _order("price", "bid", "cancel", price="1500000", trades=MARKET_BUY_TRADES, paid_fee="749.99975"),
            Booking(
                Side.BID, D("0.014995"), D("1499999.5"), D("749.99975"), Outcome.FILLED,
                Remainder(D(0), D("0.5"), is_dust=True), ("t-1", "t-2"),
            ),
            id="market-buy-ends-cancel-with-dust-KRW-is-filled",
        ),
        pytest.param(
            _order("price", "bid", "cancel", price="5000000", trades=MARKET_BUY_TRADES, paid_fee="749.99975"),
            Booking(
                Side.BID, D("0.014995"), D("1499999.5"), D("749.99975"), Outcome.PARTIALLY_CANCELLED,
                Remainder(D(0), D("3500000.5"), is_dust=False), ("t-1", "t-2"),
            ),
            id="market-buy-that-ran-out-of-book-is-partly-cancelled",
        ),
        pytest.param(
            _order("price", "bid", "cancel", price="10000"),
            Booking(Side.BID, D(0), D(0), D(0), Outcome.CANCELLED, Remainder(D(0), D(10000), is_dust=False)),
            id="market-buy-that-executed-nothing",
        ),
        pytest.param(
            _order("market", "ask", "done", volume="0.03", paid_fee="1497.5",
                   trades=[_trade(1, "ask", "99900000", "0.01"), _trade(2, "ask", "99800000", "0.02")]),
            Booking(
                Side.ASK, D("0.03"), D(2_995_000), D("1497.5"), Outcome.FILLED,
                Remainder(D(0), D(0), is_dust=True), ("t-1", "t-2"),
            ),
            id="market-sell-done",
        ),
        pytest.param(
            _order("limit", "bid", "wait", price="100000000", volume="0.02", paid_fee="500",
                   trades=[_trade(1, "bid", "100000000", "0.01")]),
            Booking(
                Side.BID, D("0.01"), D(1_000_000), D(500), Outcome.PARTIALLY_FILLED,
                Remainder(D("0.01"), D(1_000_000), is_dust=False), ("t-1",),
            ),
            id="limit-buy-open-with-a-partial-fill",
        ),
        pytest.param(
            _order("limit", "ask", "wait", price="101000000", volume="0.01"),
            Booking(
                Side.ASK, D(0), D(0), D(0), Outcome.OPEN, Remainder(D("0.01"), D(1_010_000), is_dust=False)
            ),
            id="limit-sell-open-untouched",
        ),
        pytest.param(
            _order("limit", "ask", "cancel", price="100000000", volume="0.01004", paid_fee="500",
                   trades=[_trade(1, "ask", "100000000", "0.01")]),
            Booking(
                Side.ASK, D("0.01"), D(1_000_000), D(500), Outcome.FILLED,
                Remainder(D("0.00004"), D(4000), is_dust=True), ("t-1",),
            ),
            id="limit-sell-cancelled-with-a-remainder-under-the-minimum-is-filled-and-dust",
        ),
    ],
)  # fmt: skip
def test_booking_of(order: Order, expected: Booking) -> None:
    assert booking_of(order, MIN_TOTAL) == expected


def test_a_market_sell_remainder_is_valued_at_the_reference_price() -> None:
    order = _order("market", "ask", "cancel", volume="0.0101", paid_fee="500",
                   trades=[_trade(1, "ask", "100000000", "0.01")])  # fmt: skip
    with_price = booking_of(order, MIN_TOTAL, reference_price=D(99_000_000))
    without = booking_of(order, MIN_TOTAL)
    assert with_price.remainder == Remainder(D("0.0001"), D(9900), is_dust=False)
    assert with_price.outcome is Outcome.PARTIALLY_CANCELLED
    assert without.remainder.is_dust is False  # no price to value it: never called dust


def test_cash_and_position_deltas() -> None:
    buy = booking_of(_order("price", "bid", "cancel", price="1500000", trades=MARKET_BUY_TRADES,
                            paid_fee="749.99975"), MIN_TOTAL)  # fmt: skip
    sell = booking_of(_order("market", "ask", "done", volume="0.01", paid_fee="499.5",
                             trades=[_trade(1, "ask", "99900000", "0.01")]), MIN_TOTAL)  # fmt: skip
    assert (buy.cash_delta, buy.volume_delta) == (D("-1500749.49975"), D("0.014995"))
    assert (sell.cash_delta, sell.volume_delta) == (D("998500.5"), D("-0.01"))


def test_average_price_rounds_against_the_account() -> None:
    nothing = Remainder(D(0), D(0), is_dust=True)
    assert Booking(Side.BID, D(3), D(10), D(0), Outcome.FILLED, nothing).average_price == D("3.33333334")
    assert Booking(Side.ASK, D(3), D(10), D(0), Outcome.FILLED, nothing).average_price == D("3.33333333")
    assert booking_of(_order("price", "bid", "cancel", price="10000"), MIN_TOTAL).average_price is None


def test_a_listing_answer_books_upbits_executed_funds() -> None:
    order = _order("price", "bid", "cancel", price="1500000", executed_volume="0.014995",
                   executed_funds="1499999.5", paid_fee="749.99975")  # fmt: skip
    assert booking_of(order, MIN_TOTAL).funds == D("1499999.5")


def test_an_answer_that_cannot_say_what_executed_is_incomplete() -> None:
    order = _order("price", "bid", "cancel", price="1500000", executed_volume="0.014995")
    with pytest.raises(IncompleteAnswer):
        booking_of(order, MIN_TOTAL)


def test_trades_that_do_not_add_up_are_incomplete() -> None:
    order = _order(
        "price", "bid", "cancel", price="1500000", trades=MARKET_BUY_TRADES[:1], executed_volume="0.014995"
    )
    with pytest.raises(IncompleteAnswer):
        booking_of(order, MIN_TOTAL)


def test_booking_delta_books_only_what_a_later_answer_adds() -> None:
    first = booking_of(_order("limit", "bid", "wait", price="100000000", volume="0.02", paid_fee="500",
                              trades=[_trade(1, "bid", "100000000", "0.01")]), MIN_TOTAL)  # fmt: skip
    final = booking_of(_order("limit", "bid", "done", price="100000000", volume="0.02", paid_fee="1000",
                              trades=[_trade(1, "bid", "100000000", "0.01"),
                                      _trade(2, "bid", "100000000", "0.01")]), MIN_TOTAL)  # fmt: skip
    delta = booking_delta(first, final)
    assert (delta.volume, delta.funds, delta.fee, delta.trade_uuids) == (
        D("0.01"),
        D(1_000_000),
        D(500),
        ("t-2",),
    )
    assert delta.outcome is Outcome.FILLED
    assert booking_delta(None, first) == first
    assert booking_delta(final, final).volume == 0
    with pytest.raises(ValueError, match="cannot execute less"):
        booking_delta(final, first)
