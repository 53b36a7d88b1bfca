"""A fill on the bus is a notification: reconcile it with the executor's ledger before applying it.

The executor publishes a ``Fill`` only after the transaction that wrote its ``trading_history``
row (unique on run and order id) committed, and that row rebuilds the exact message it published
(``services/executor/records.py``). So a genuine fill always finds its row and equals it; a forged
one (no row, or another price, quantity, side, PnL or position) does not, and its consumers refuse
it (:func:`refusal`: dead-lettered with ``FILL_MISMATCH`` and a CRITICAL alert) instead of moving
their state.

Consumers fold the read into a statement they already make: :data:`RECORD_COLUMNS` is a select
list over a ``trading_history`` row joined as ``AS fill``, read back by :func:`recorded_from_row`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from coinpilot.contracts import AlertLevel, AlertType, Fill, RiskAlert
from coinpilot.errors import RefusedMessage

RULE = "FILL_MISMATCH"
_LEDGER = "fill.signal_info->'ledger'"

# (column alias, SQL expression over the row joined ``AS fill``). The ledger figures the schema has
# no column for ride in ``signal_info['ledger']`` as exact decimal strings; read as text, so the
# answer is the same whatever JSON codec the connection carries.
_RECORD: tuple[tuple[str, str], ...] = (
    ("order_id", "fill.order_id"),
    ("symbol", "fill.symbol"),
    ("side", "fill.side"),
    ("currency", "fill.currency"),
    ("executed_at", "fill.executed_at"),
    ("decision_price", "fill.decision_price"),
    ("price", "fill.price"),
    ("quantity", "fill.quantity"),
    ("amount", "fill.amount"),
    ("fee", "fill.fee"),
    ("realized_pnl", "fill.realized_pnl"),
    ("entry_avg_price", "fill.entry_avg_price"),
    ("regime", "fill.regime"),
    ("exit_reason", "fill.exit_reason"),
    ("high_water_mark", "fill.high_water_mark"),
    ("balance_after", f"{_LEDGER}->>'balance_after'"),
    ("position_quantity_after", f"{_LEDGER}->>'position_quantity_after'"),
    ("position_avg_price_after", f"{_LEDGER}->>'position_avg_price_after'"),
    ("realized_pnl_gross", f"{_LEDGER}->>'realized_pnl_gross'"),
    ("opened_at", f"{_LEDGER}->>'opened_at'"),
    ("position_id", "fill.signal_info->>'position_id'"),
)
PREFIX = "ledger_"

#: The select list of a ``trading_history`` row joined ``AS fill`` (every alias ``ledger_*``).
RECORD_COLUMNS = ", ".join(f"{expr} AS {PREFIX}{name}" for name, expr in _RECORD)


@dataclass(frozen=True, slots=True)
class RecordedFill:
    """The ``trading_history`` row of one order, as the fields of the ``Fill`` it was written from."""

    values: Mapping[str, object]
    position_id: str | None
    """SELL: the order id of the BUY that opened the position it closed (None for a BUY)."""


def recorded_from_row(row: Mapping[str, Any]) -> RecordedFill | None:
    """The recorded fill in a row selected with :data:`RECORD_COLUMNS`; None when there is no row."""
    if row[f"{PREFIX}order_id"] is None:
        return None

    def text(name: str) -> str | None:
        value = row[f"{PREFIX}{name}"]
        return None if value is None else str(value)

    def number(name: str) -> Decimal | None:
        value = text(name)
        return None if value is None else Decimal(value)

    opened = text("opened_at")
    values: dict[str, object] = {
        "symbol": text("symbol"),
        "side": text("side"),
        "currency": text("currency"),
        "ts_event": row[f"{PREFIX}executed_at"],
        "decision_price": row[f"{PREFIX}decision_price"],
        "fill_price": row[f"{PREFIX}price"],
        "quantity": row[f"{PREFIX}quantity"],
        "amount": row[f"{PREFIX}amount"],
        "fee": row[f"{PREFIX}fee"],
        "realized_pnl": row[f"{PREFIX}realized_pnl"],
        "entry_avg_price": row[f"{PREFIX}entry_avg_price"],
        "regime": text("regime"),
        "exit_reason": text("exit_reason"),
        "high_water_mark": row[f"{PREFIX}high_water_mark"],
        "balance_after": number("balance_after"),
        "position_quantity_after": number("position_quantity_after"),
        "position_avg_price_after": number("position_avg_price_after"),
        "realized_pnl_gross": number("realized_pnl_gross"),
        "opened_at": None if opened is None else datetime.fromisoformat(opened),
    }
    return RecordedFill(values, text("position_id"))


#: The fields of a ``Fill`` a ledger record holds (the keys of :attr:`RecordedFill.values`).
RECORDED_FIELDS: tuple[str, ...] = (
    "symbol",
    "side",
    "currency",
    "ts_event",
    "decision_price",
    "fill_price",
    "quantity",
    "amount",
    "fee",
    "realized_pnl",
    "entry_avg_price",
    "regime",
    "exit_reason",
    "high_water_mark",
    "balance_after",
    "position_quantity_after",
    "position_avg_price_after",
    "realized_pnl_gross",
    "opened_at",
)


def recorded_from_fill(fill: Fill, position_id: str | None = None) -> RecordedFill:
    """The record an in-memory ledger keeps of a fill it made (its ``trading_history`` row)."""
    return RecordedFill({name: _of_fill(fill, name) for name in RECORDED_FIELDS}, position_id)


def _of_fill(fill: Fill, name: str) -> object:
    value = getattr(fill, name)
    if name in {"side", "regime", "exit_reason"}:
        return None if value is None else str(value)
    return value


def mismatch(fill: Fill, recorded: RecordedFill | None) -> str | None:
    """Why ``fill`` is not the fill the ledger recorded for its order, or None when it is.

    Every field of the message is compared (numbers as numbers, times as instants), so a fill
    that differs from its row in anything a consumer could apply is refused.
    """
    if recorded is None:
        return f"no trading_history row for order {fill.order_id}"
    differ = [
        f"{name} {_of_fill(fill, name)} (ledger {expected})"
        for name, expected in recorded.values.items()
        if _of_fill(fill, name) != expected
    ]
    if differ:
        return f"order {fill.order_id} differs from its trading_history row: " + ", ".join(differ)
    return None


def refusal(fill: Fill, reason: str) -> RefusedMessage:
    """The refusal of a fill the ledger does not confirm: dead-lettered with a CRITICAL alert."""
    message = f"{fill.side} fill {fill.order_id} of {fill.symbol} refused: {reason}"
    alert = RiskAlert(
        ts_event=fill.ts_event,
        type=AlertType.FILL_MISMATCH,
        level=AlertLevel.CRITICAL,
        message=message,
        symbol=fill.symbol,
    )
    return RefusedMessage(RULE, message, alerts=(alert,))
