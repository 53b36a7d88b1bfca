"""trading_history rows: §6.4 signal_info and an exact round trip back to the published Fill."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

import pytest

from coinpilot.contracts import ExitReason, Regime
from services.executor import state
from services.executor.core import FillOutcome, FillParams, Ledger, Position
from services.executor.records import fill_from_row, json_safe, row_values, signal_info
from tests.unit.executor.factories import T0, buy_order, paper_fill, sell_order

D = Decimal
BTC_BUY = "KRW-BTC:2026-03-02T01:00Z:buy"
PARAMS = FillParams(fee_rate=D("0.0005"), slippage_bps=D(10))


def bought():
    order = buy_order("100000000", "1000000")
    outcome = paper_fill(Ledger("KRW", D("10000000")), order, PARAMS)
    assert isinstance(outcome, FillOutcome)
    return order, outcome


def sold(reason: ExitReason = ExitReason.STOP_LOSS):
    order = sell_order(
        "96000000",
        opened_by=BTC_BUY,
        quantity="0.00999",
        avg_price="100100000",
        high_water_mark="101000000",
        exit_reason=reason,
        entry_regime=Regime.BULL,
        regime=Regime.BEAR,
    )
    position = Position("KRW-BTC", D("0.00999"), D("100100000"), Regime.BULL, D("100100000"), T0, BTC_BUY)
    outcome = paper_fill(Ledger("KRW", D("8999501.0005"), position), order, PARAMS)
    assert isinstance(outcome, FillOutcome)
    return order, outcome


def as_stored(values: dict) -> dict:
    """What PostgreSQL hands back: NUMERIC(20,8) decimals, JSONB through JSON."""
    out = {k: (v.quantize(D("0.00000001")) if isinstance(v, Decimal) else v) for k, v in values.items()}
    out["signal_info"] = json.loads(json.dumps(values["signal_info"]))
    return out


@pytest.mark.parametrize("make", [bought, sold], ids=["buy", "sell"])
def test_a_stored_row_rebuilds_the_published_fill_byte_for_byte(make) -> None:
    order, outcome = make()
    row = as_stored(row_values(order, outcome.fill, "live", "t-1"))
    assert fill_from_row(row).to_json() == outcome.fill.to_json()


@pytest.mark.parametrize("make", [bought, sold], ids=["buy", "sell"])
def test_the_fill_sql_writes_every_column_of_a_row_and_reads_back_what_rebuilds_it(make) -> None:
    order, outcome = make()
    row = row_values(order, outcome.fill, "live", "t-1")
    assert tuple(row) == state._HISTORY_COLUMNS
    assert set(state._STORED_FILL_COLUMNS) <= set(row)
    stored = {c: as_stored(row)[c] for c in state._STORED_FILL_COLUMNS}
    assert fill_from_row(stored).to_json() == outcome.fill.to_json()


def test_every_money_field_of_a_fill_has_eight_decimals() -> None:
    for _, outcome in (bought(), sold()):
        money = [v for v in outcome.fill.model_dump().values() if isinstance(v, Decimal)]
        assert money and all(v.as_tuple().exponent == -8 for v in money)


def test_sell_signal_info_keeps_the_entry_regime_the_hwm_and_the_entry_price() -> None:
    order, outcome = sold(ExitReason.STOP_LOSS)
    info = signal_info(order, outcome.fill)
    assert (info["regime"], info["current_regime"], info["exit_reason"]) == ("BULL", "BEAR", "STOP_LOSS")
    assert (info["new_hwm"], info["entry_avg_price"]) == (101000000.0, 100100000.0)
    assert info["rsi_14"] == 38.5 and info["close"] == 96000000.0 and info["symbol"] == "KRW-BTC"


def test_buy_signal_info_has_the_indicators_and_the_current_regime() -> None:
    order, outcome = bought()
    info = signal_info(order, outcome.fill)
    assert (info["regime"], info["entry_reason"], info["decision_price"]) == ("BULL", "ENTRY_OK", 100000000.0)
    assert info["ledger"]["balance_after"] == "8999501.00050000"
    json.dumps(info)  # JSON-safe as a whole


class Colour(StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (D("1.5"), 1.5),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00+00:00"),
        (Colour.RED, "red"),
        ((1, 2), [1, 2]),
        ({1: D("2")}, {"1": 2.0}),
        (object, str(object)),
        (None, None),
    ],
)
def test_json_safe_converts_to_builtins(value, expected) -> None:
    assert json_safe(value) == expected
