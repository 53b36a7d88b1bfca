"""Pure mapping between fills and ``trading_history`` rows (no SQL here).

A stored row must rebuild the exact ``Fill`` that was published, so a redelivered order can be
answered with the same message. Columns hold what the schema has; the ledger figures the schema has
no column for (cash and position after the fill, position start) ride in ``signal_info["ledger"]``
as exact decimal strings. The signal part of ``signal_info`` follows §6.4 (Decimal -> float,
datetime -> ISO string, enums -> their value).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from coinpilot.contracts import EntrySignal, ExitReason, ExitSignal, Fill, OrderApproved, Regime, Side

STRATEGY_NAME = "AdaptiveMeanReversion"
LEDGER_KEY = "ledger"


def json_safe(value: Any) -> Any:
    """Builtins only: Decimal -> float, datetime/date -> ISO, enums -> value, tuples/sets -> lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def signal_info(order: OrderApproved, fill: Fill) -> dict[str, Any]:
    """Indicators of the deciding candle plus the §6.4 extras, and the ledger block."""
    signal = order.signal
    snapshot = signal.snapshot.model_dump(exclude={"schema_version", "candle"})
    candle = signal.snapshot.candle
    info: dict[str, Any] = {
        **snapshot,
        "close": candle.close,
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "volume": candle.volume,
        "symbol": order.symbol,
        "order_id": order.order_id,
        "approved_by": order.approved_by,
        "decision_price": order.reference_price,
    }
    if isinstance(signal, EntrySignal):
        info |= {"regime": order.regime, "entry_reason": signal.reason, "passed_checks": signal.passed_checks}
    elif isinstance(signal, ExitSignal):
        info |= {
            "regime": fill.regime,  # the entry regime, as the original
            "current_regime": signal.regime,
            "exit_reason": signal.exit_reason,
            "new_hwm": signal.high_water_mark,  # kept for STOP_LOSS too (§6.4 fix)
            "entry_avg_price": fill.entry_avg_price,
            "position_id": signal.position_id,
        }
    safe = json_safe(info)
    safe[LEDGER_KEY] = {
        "balance_after": str(fill.balance_after),
        "position_quantity_after": str(fill.position_quantity_after),
        "position_avg_price_after": str(fill.position_avg_price_after),
        "realized_pnl_gross": None if fill.realized_pnl_gross is None else str(fill.realized_pnl_gross),
        "opened_at": fill.opened_at.isoformat(),
    }
    return safe


def row_values(order: OrderApproved, fill: Fill, run_id: str, trace_id: str | None) -> dict[str, Any]:
    """The ``trading_history`` columns of a fill."""
    return {
        "run_id": run_id,
        "order_id": fill.order_id,
        "symbol": fill.symbol,
        "side": str(fill.side),
        "order_type": "MARKET",
        "price": fill.fill_price,
        "decision_price": fill.decision_price,
        "quantity": fill.quantity,
        "amount": fill.amount,
        "fee": fill.fee,
        "currency": fill.currency,
        "status": "FILLED",
        "strategy_name": STRATEGY_NAME,
        "signal_info": signal_info(order, fill),
        "executed_at": fill.ts_event,
        "regime": str(fill.regime),
        "high_water_mark": fill.high_water_mark,
        "exit_reason": None if fill.exit_reason is None else str(fill.exit_reason),
        "realized_pnl": fill.realized_pnl,
        "entry_avg_price": fill.entry_avg_price,
        "trace_id": trace_id,
    }


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def fill_from_row(row: Mapping[str, Any]) -> Fill:
    """The Fill a stored ``trading_history`` row was written from."""
    ledger = row["signal_info"][LEDGER_KEY]
    return Fill(
        ts_event=row["executed_at"],
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        currency=row["currency"],
        decision_price=row["decision_price"],
        fill_price=row["price"],
        quantity=row["quantity"],
        amount=row["amount"],
        fee=row["fee"],
        balance_after=Decimal(ledger["balance_after"]),
        position_quantity_after=Decimal(ledger["position_quantity_after"]),
        position_avg_price_after=Decimal(ledger["position_avg_price_after"]),
        realized_pnl=row["realized_pnl"],
        realized_pnl_gross=_decimal(ledger["realized_pnl_gross"]),
        entry_avg_price=row["entry_avg_price"],
        regime=Regime(row["regime"]),
        exit_reason=None if row["exit_reason"] is None else ExitReason(row["exit_reason"]),
        high_water_mark=row["high_water_mark"],
        opened_at=datetime.fromisoformat(ledger["opened_at"]),
    )
