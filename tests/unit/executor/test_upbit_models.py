"""Upbit answers parsed into typed results, and the tick rule (services/executor/upbit/models.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from services.executor.upbit.errors import MalformedAnswer
from services.executor.upbit.models import (
    BookLevel,
    OrderState,
    OrdType,
    Side,
    is_on_tick,
    parse_chance,
    parse_instruments,
    parse_order,
    parse_orderbooks,
    to_wire,
)

D = Decimal

# A market buy as Upbit answers GET /v1/order: volume null, price = the KRW amount.
MARKET_BUY = {
    "uuid": "9ca023a5-851b-4fec-9f0a-48cd83c2eaae",
    "side": "bid",
    "ord_type": "price",
    "price": "10000.0",
    "state": "cancel",
    "market": "KRW-BTC",
    "created_at": "2026-12-04T19:00:00+09:00",
    "volume": None,
    "remaining_volume": None,
    "reserved_fee": "5.0",
    "remaining_fee": "0.0",
    "paid_fee": "4.99975",
    "locked": "0.0",
    "executed_volume": "0.00009999",
    "trades_count": 1,
    "identifier": "KRW-BTC:20261204T1000:buy",
    "trades": [
        {
            "market": "KRW-BTC",
            "uuid": "t-1",
            "price": "100000000.0",
            "volume": "0.00009999",
            "funds": "9999.0",
            "trend": "up",
            "created_at": "2026-12-04T19:00:00+09:00",
            "side": "bid",
        }
    ],
}


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [
        pytest.param("100000000", "1000", True, id="on-tick"),
        pytest.param("100000500", "1000", False, id="off-tick"),
        pytest.param("1.23", "0.01", True, id="decimal-tick"),
        pytest.param("1.235", "0.01", False, id="below-decimal-tick"),
        pytest.param("0", "1", False, id="zero-price"),
        pytest.param("-1000", "1000", False, id="negative-price"),
    ],
)
def test_is_on_tick(price: str, tick: str, expected: bool) -> None:
    assert is_on_tick(D(price), D(tick)) is expected


@pytest.mark.parametrize(
    ("value", "wire"),
    [("100000000", "100000000"), ("1E+8", "100000000"), ("0.00100000", "0.001"), ("5000.0", "5000")],
)
def test_to_wire_writes_plain_digits(value: str, wire: str) -> None:
    assert to_wire(D(value)) == wire


def test_parse_order_reads_upbits_field_names() -> None:
    order = parse_order(MARKET_BUY)
    assert (order.side, order.ord_type, order.state) == (Side.BID, OrdType.PRICE, OrderState.CANCEL)
    assert order.volume is None and order.price == D("10000.0")
    assert order.executed_volume == D("0.00009999") and order.paid_fee == D("4.99975")
    assert order.identifier == "KRW-BTC:20261204T1000:buy"
    assert order.trades[0].funds == D("9999.0") and order.executed_funds == D("9999.0")
    assert not order.is_open


def test_parse_order_without_trades_has_none() -> None:
    raw = {k: v for k, v in MARKET_BUY.items() if k != "trades"}
    assert parse_order(raw).trades == ()


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param({"executed_volume": "abc"}, id="number-not-a-number"),
        pytest.param({"state": "pending"}, id="unknown-state"),
        pytest.param({"created_at": "2026-12-04T19:00:00"}, id="time-without-offset"),
        pytest.param({"uuid": None}, id="no-uuid"),
    ],
)
def test_a_broken_order_is_a_malformed_answer(broken: dict[str, object]) -> None:
    with pytest.raises(MalformedAnswer):
        parse_order({**MARKET_BUY, **broken})


def test_parse_chance_reads_fees_minimums_and_balances() -> None:
    chance = parse_chance(
        {
            "bid_fee": "0.0005",
            "ask_fee": "0.0005",
            "maker_bid_fee": "0.0005",
            "maker_ask_fee": "0.0005",
            "market": {
                "id": "KRW-BTC",
                "name": "BTC/KRW",
                "order_types": ["limit"],
                "bid": {"currency": "KRW", "min_total": "5000"},
                "ask": {"currency": "BTC", "min_total": "5000"},
                "max_total": "1000000000",
                "state": "active",
            },
            "bid_account": {"currency": "KRW", "balance": "100.5", "locked": "0", "avg_buy_price": "0"},
            "ask_account": {"currency": "BTC", "balance": "0.1", "locked": "0.01", "avg_buy_price": "9e7"},
        }
    )
    assert chance.bid_min_total == D(5000) and chance.ask_fee == D("0.0005")
    assert chance.bid_account.balance == D("100.5") and chance.ask_account.locked == D("0.01")


def test_parse_instruments_reads_the_tick_per_market() -> None:
    found = parse_instruments(
        [{"market": "KRW-BTC", "quote_currency": "KRW", "tick_size": "1000", "supported_levels": ["1000"]}]
    )
    assert found["KRW-BTC"].tick_size == D(1000)


# GET /v1/orderbook as Upbit answers it: numbers are JSON numbers (doubles), not strings, and each
# unit pairs the n-th ask with the n-th bid.
ORDERBOOK = """[{"market":"KRW-BTC","timestamp":1676965698792,"total_ask_size":0.63651414,
"total_bid_size":0.06536474,"orderbook_units":[
{"ask_price":3.2315E7,"bid_price":3.2311E7,"ask_size":0.60658218,"bid_size":0.00934746},
{"ask_price":3.2312E7,"bid_price":3.231E7,"ask_size":0.02993196,"bid_size":0.05601728},
{"ask_price":3.2316E7,"bid_price":0,"ask_size":0,"bid_size":0}],"level":0}]"""


def test_parse_orderbooks_reads_each_side_best_first_and_exact() -> None:
    (book,) = parse_orderbooks(json.loads(ORDERBOOK, parse_float=Decimal)).values()
    assert (book.market, book.timestamp_ms) == ("KRW-BTC", 1676965698792)
    assert book.asks == (BookLevel(D(32312000), D("0.02993196")), BookLevel(D(32315000), D("0.60658218")))
    assert book.bids == (BookLevel(D(32311000), D("0.00934746")), BookLevel(D(32310000), D("0.05601728")))
    assert book.total_ask_size == D("0.63651414")


@pytest.mark.parametrize(
    "broken",
    [
        {"market": "KRW-BTC", "timestamp": 1},
        {"market": "KRW-BTC", "timestamp": 1, "orderbook_units": [{"ask_price": 1, "ask_size": 1}]},
        {"market": "KRW-BTC", "orderbook_units": []},
        {"timestamp": 1, "orderbook_units": []},
    ],
    ids=["no-units", "unit-without-bid", "no-timestamp", "no-market"],
)
def test_a_broken_orderbook_is_a_malformed_answer(broken: dict[str, object]) -> None:
    with pytest.raises(MalformedAnswer):
        parse_orderbooks([broken])
