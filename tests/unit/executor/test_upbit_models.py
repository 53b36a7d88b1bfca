"""Upbit answers parsed into typed results, and the tick rule (services/executor/upbit/models.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.executor.upbit.errors import MalformedAnswer
from services.executor.upbit.models import (
    OrderState,
    OrdType,
    Side,
    is_on_tick,
    parse_chance,
    parse_instruments,
    parse_order,
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
