"""What refuses a live order before anything is written or sent (pure).

Caps bound what a BUY may spend: per order and per day (the quote amount of the day's BUYs that
are not final without execution). A SELL is never capped: a cap must not trap a position. The
exchange's minimum order total is checked here too, so an order the exchange would refuse (and
whose identifier it would burn) is rejected with its own reason, and a position worth less than
the minimum is called what it is: dust, never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from coinpilot.contracts import OrderApproved, RejectReason, Side
from services.executor.core import Ledger, Rejection


@dataclass(frozen=True, slots=True)
class Caps:
    """Most a BUY may spend in one order, and all BUYs of one (UTC) day, in the quote currency."""

    per_order: Decimal
    per_day: Decimal


def refuse_buy(
    order: OrderApproved,
    ledger: Ledger,
    caps: Caps,
    spent_today: Decimal,
    min_total: Decimal,
    fee_rate: Decimal,
) -> Rejection | None:
    """A BUY over a cap, under the exchange minimum, or more than the ledger's cash can pay."""
    amount = order.amount
    if amount is None or amount <= 0:
        return Rejection(order, RejectReason.NON_POSITIVE_AMOUNT, f"BUY amount {amount}")
    if amount > caps.per_order:
        return Rejection(
            order,
            RejectReason.ORDER_CAP_EXCEEDED,
            f"BUY of {amount} {ledger.currency} is over the per-order cap of {caps.per_order}",
        )
    if spent_today + amount > caps.per_day:
        return Rejection(
            order,
            RejectReason.DAILY_CAP_EXCEEDED,
            f"BUY of {amount} {ledger.currency} after {spent_today} today is over the per-day cap of "
            f"{caps.per_day}",
        )
    if amount < min_total:
        return Rejection(
            order,
            RejectReason.BELOW_EXCHANGE_MINIMUM,
            f"BUY of {amount} {ledger.currency} is under the exchange minimum order total {min_total}",
        )
    most = amount + amount * fee_rate
    if ledger.balance < most:
        return Rejection(
            order,
            RejectReason.INSUFFICIENT_BALANCE,
            f"needs up to {most} {ledger.currency} (amount {amount} + fee), has {ledger.balance}",
        )
    return None


def refuse_sell(order: OrderApproved, ledger: Ledger, min_total: Decimal) -> Rejection | None:
    """A SELL of nothing, or of a position worth less than the exchange minimum (dust) at the
    order's reference price."""
    position = ledger.position
    if position is None or position.quantity <= 0:
        return Rejection(order, RejectReason.NO_POSITION, f"no {order.symbol} position to sell")
    worth = position.quantity * order.reference_price
    if worth < min_total:
        return Rejection(
            order,
            RejectReason.BELOW_EXCHANGE_MINIMUM,
            f"{order.symbol} position {position.quantity} is worth ~{worth:.0f}, under the exchange "
            f"minimum order total {min_total}: dust, not sold",
        )
    return None


def refuse(
    order: OrderApproved,
    ledger: Ledger,
    caps: Caps,
    spent_today: Decimal,
    min_total: Decimal,
    fee_rate: Decimal,
) -> Rejection | None:
    if order.side is Side.BUY:
        return refuse_buy(order, ledger, caps, spent_today, min_total, fee_rate)
    return refuse_sell(order, ledger, min_total)
