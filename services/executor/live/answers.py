"""From the exchange's answer to the venue's row, and from a final row to the ledger's answer (pure).

The ledger books what *executed*, whatever the exchange's closing state: a market buy that ends
``cancel`` with executed volume (Upbit's usual end for one) is filled for its executed volume, its
trades' funds and its paid fee. What did not execute is the order's remainder (unspent quote of a
market buy, unexecuted volume otherwise); under the exchange's minimum order total it is dust:
recorded, never retried.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from coinpilot.contracts import OrderApproved, RejectReason, Side
from services.executor.core import EIGHT_DP, Execution, Rejection
from services.executor.live.rows import Progress, VenueOrderRow
from services.executor.live.states import VenueState, state_of
from services.executor.upbit.models import CLOSED_STATES, Order, OrdType, to_wire
from services.executor.upbit.orders import booking_of

# A failed row's ``last_error`` starts with the reason its order is rejected with.
REASON_MARK = ": "


def progress_of(answer: Order, min_total: Decimal, reference_price: Decimal) -> Progress:
    """What ``answer`` (``GET /v1/order``, with its trades) says, as the row records it."""
    booking = booking_of(answer, min_total, reference_price)
    remainder = booking.remainder
    closed = answer.state in CLOSED_STATES
    left = remainder.quote if answer.ord_type is OrdType.PRICE else remainder.volume
    return Progress(
        state=state_of(answer),
        exchange_uuid=answer.uuid,
        exchange_state=str(answer.state),
        executed_volume=booking.volume,
        funds=booking.funds,
        paid_fee=booking.fee,
        trades=[
            {
                "uuid": t.uuid,
                "price": to_wire(t.price),
                "volume": to_wire(t.volume),
                "funds": to_wire(t.funds),
                "created_at": t.created_at.isoformat() if t.created_at else None,
            }
            for t in answer.trades
        ],
        remainder=left if closed else None,
        dust=closed and remainder.is_dust and left > 0,
    )


def failure(reason: RejectReason, message: str) -> str:
    """A failed row's ``last_error``: the rejection reason, then what happened."""
    return f"{reason}{REASON_MARK}{message}"


def execution_of(order: OrderApproved, row: VenueOrderRow) -> Execution:
    """What a ``done`` row executed, at the ledger's 8 decimals rounded against the account: the
    average price and the amount of a BUY up, of a SELL down (exact whenever the prices have no
    more decimals than the ledger)."""
    rounding = ROUND_CEILING if order.side is Side.BUY else ROUND_FLOOR
    volume = row.executed_volume
    return Execution(
        fill_price=(row.funds / volume).quantize(EIGHT_DP, rounding=rounding),
        quantity=volume,
        amount=row.funds.quantize(EIGHT_DP, rounding=rounding),
        fee=row.paid_fee.quantize(EIGHT_DP, rounding=ROUND_CEILING),
    )


def answer_of(order: OrderApproved, row: VenueOrderRow) -> Execution | Rejection:
    """The ledger's answer to a final row: what executed, or why nothing did."""
    if row.state is VenueState.DONE:
        return execution_of(order, row)
    if row.state is VenueState.CANCELLED:
        return Rejection(
            order,
            RejectReason.VENUE_NOTHING_EXECUTED,
            f"the exchange closed order {row.identifier} ({row.exchange_state}) with nothing executed",
        )
    if row.state is VenueState.FAILED:
        reason, _, message = (row.last_error or "").partition(REASON_MARK)
        known = reason in RejectReason.__members__
        return Rejection(
            order,
            RejectReason(reason) if known else RejectReason.VENUE_REFUSED,
            message if known else (row.last_error or "failed"),
        )
    raise ValueError(f"venue order {row.order_id} is not final ({row.state})")
