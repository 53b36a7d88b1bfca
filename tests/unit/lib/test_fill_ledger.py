"""``coinpilot.fill_ledger``: a fill is applied only when it is the one its ledger row recorded."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from coinpilot.contracts import AlertLevel, AlertType, ExitReason, Fill, Regime, RiskAlert, Side
from coinpilot.fill_ledger import PREFIX, RULE, mismatch, recorded_from_row, refusal
from tests.unit.strategy.factories import T0, fill, row_of

BUY_ID = "KRW-BTC:2026-03-02T12:00Z:buy"
SELL_ID = "KRW-BTC:2026-03-02T12:30Z:sell"


def no_row() -> dict[str, Any]:
    return dict.fromkeys(row_of(fill(Side.BUY, order_id=BUY_ID)))


GENUINE_SELL = fill(
    Side.SELL, order_id=SELL_ID, price="97", quantity="2", realized_pnl="-6.5", opened_at=T0
).model_copy(update={"exit_reason": ExitReason.STOP_LOSS, "entry_avg_price": Decimal("100")})


@pytest.mark.parametrize(
    "genuine",
    [fill(Side.BUY, order_id=BUY_ID, price="1005.5", quantity="0.12345678"), GENUINE_SELL],
    ids=["buy", "sell"],
)
def test_a_fill_equal_to_its_row_matches(genuine: Fill) -> None:
    assert mismatch(genuine, recorded_from_row(row_of(genuine, BUY_ID))) is None


def test_the_same_numbers_written_otherwise_still_match() -> None:
    genuine = fill(Side.BUY, order_id=BUY_ID, price="1005", quantity="2")
    row = row_of(genuine) | {
        f"{PREFIX}price": Decimal("1005.00000000"),
        f"{PREFIX}balance_after": "1000000.0",
    }
    assert mismatch(genuine, recorded_from_row(row)) is None


def test_a_fill_without_a_row_is_refused() -> None:
    forged = fill(Side.SELL, order_id=SELL_ID, realized_pnl="50")
    assert recorded_from_row(no_row()) is None
    assert mismatch(forged, None) == f"no trading_history row for order {SELL_ID}"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fill_price": Decimal("1")}, "fill_price 1 (ledger 97)"),
        ({"quantity": Decimal("3")}, "quantity 3 (ledger 2)"),
        ({"side": Side.BUY}, "side BUY (ledger SELL)"),
        ({"symbol": "KRW-ETH"}, "symbol KRW-ETH (ledger KRW-BTC)"),
        ({"realized_pnl": Decimal("1000000")}, "realized_pnl 1000000 (ledger -6.5)"),
        ({"position_quantity_after": Decimal("2")}, "position_quantity_after 2 (ledger 0)"),
        ({"opened_at": T0.replace(hour=1)}, "opened_at"),
        ({"regime": Regime.BEAR}, "regime BEAR (ledger BULL)"),
        ({"ts_event": T0.replace(hour=13)}, "ts_event"),
    ],
)
def test_a_fill_that_differs_from_its_row_in_any_field_is_refused_naming_it(
    change: dict[str, Any], named: str
) -> None:
    forged = GENUINE_SELL.model_copy(update=change)
    reason = mismatch(forged, recorded_from_row(row_of(GENUINE_SELL)))
    assert reason is not None and reason.startswith(f"order {SELL_ID} differs from its trading_history row")
    assert named in reason


def test_the_position_a_sell_closed_is_read_from_its_row() -> None:
    recorded = recorded_from_row(row_of(GENUINE_SELL, position_id=BUY_ID))
    assert recorded is not None and recorded.position_id == BUY_ID
    assert replace(recorded, position_id=None).values == recorded.values


def test_the_refusal_names_the_rule_and_carries_a_critical_alert() -> None:
    forged = fill(Side.SELL, order_id=SELL_ID)
    refused = refusal(forged, "no trading_history row")
    assert refused.rule == RULE == "FILL_MISMATCH"
    assert str(refused) == f"FILL_MISMATCH: SELL fill {SELL_ID} of KRW-BTC refused: no trading_history row"
    (alert,) = refused.alerts
    assert isinstance(alert, RiskAlert)
    assert (alert.type, alert.level, alert.symbol, alert.ts_event) == (
        AlertType.FILL_MISMATCH,
        AlertLevel.CRITICAL,
        "KRW-BTC",
        forged.ts_event,
    )
