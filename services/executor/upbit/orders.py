"""What the ledger books for an Upbit order, from Upbit's answer about it (pure).

An answer (``GET /v1/order``) says the order's ``state``, ``executed_volume``, ``trades`` (price,
volume, funds) and ``paid_fee``. The ledger books what *executed*, whatever the state: a market buy
that ends ``cancel`` (Upbit's usual end for one: the KRW left after the last whole unit is released)
is filled for its executed volume. What did not execute is the order's remainder; when it is worth
less than the exchange's minimum order total it is **dust**: no order could trade it, so it is
tracked, never retried.

Fills are booked as they happen: ``booking_delta(booked, now)`` is what one answer adds to what an
earlier answer of the same order already booked. Every rounding goes against the account (the
paper venue's rule): an average BUY price rounds up, a SELL price down, to the ledger's 8 decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from services.executor.upbit.models import CLOSED_STATES, Order, OrderState, OrdType, Side

ZERO = Decimal(0)
LEDGER_QUANTUM = Decimal("0.00000001")


class Outcome(StrEnum):
    """Where an order stands for the ledger."""

    OPEN = "open"  # on the book, nothing executed
    PARTIALLY_FILLED = "partially_filled"  # on the book, some executed
    FILLED = "filled"  # closed; what did not execute (if anything) is dust
    PARTIALLY_CANCELLED = "partially_cancelled"  # closed with a tradable remainder
    CANCELLED = "cancelled"  # closed, nothing executed


@dataclass(frozen=True, slots=True)
class Remainder:
    """What an order did not execute: base volume (a sell or a limit buy) or quote amount (a market
    buy), its value in the quote currency, and whether that value is under the minimum order total."""

    volume: Decimal
    quote: Decimal
    is_dust: bool


@dataclass(frozen=True, slots=True)
class Booking:
    """What the ledger books for an order, as of one answer (or, from ``booking_delta``, since an
    earlier one)."""

    side: Side
    volume: Decimal  # base currency executed
    funds: Decimal  # quote currency traded, before fees
    fee: Decimal  # quote currency paid in fees
    outcome: Outcome
    remainder: Remainder
    trade_uuids: tuple[str, ...] = ()

    @property
    def cash_delta(self) -> Decimal:
        """The quote-currency change: a BUY pays funds + fee, a SELL receives funds - fee."""
        return -(self.funds + self.fee) if self.side is Side.BID else self.funds - self.fee

    @property
    def volume_delta(self) -> Decimal:
        """The base-currency change of the position."""
        return self.volume if self.side is Side.BID else -self.volume

    @property
    def average_price(self) -> Decimal | None:
        """funds / volume to 8 decimals, rounded against the account; None when nothing executed."""
        if self.volume == 0:
            return None
        rounding = ROUND_CEILING if self.side is Side.BID else ROUND_FLOOR
        return (self.funds / self.volume).quantize(LEDGER_QUANTUM, rounding=rounding)


class IncompleteAnswer(ValueError):
    """Raised when an answer cannot say what executed (a listing without trades or executed_funds)."""


def remainder_of(order: Order, min_total: Decimal, reference_price: Decimal | None = None) -> Remainder:
    """What ``order`` did not execute and whether it is dust.

    A market buy's remainder is the unspent KRW; any other order's is its unexecuted volume, valued
    at its limit price or, for a market sell, at ``reference_price`` (a price the caller trusts,
    e.g. the best bid). Without a price to value it, a volume remainder is never called dust.
    """
    if order.ord_type is OrdType.PRICE:
        amount = order.price if order.price is not None else ZERO
        left = max(ZERO, amount - order.executed_funds)
        return Remainder(ZERO, left, is_dust=left < min_total)
    volume = order.remaining_volume
    if volume is None:
        volume = (order.volume or ZERO) - order.executed_volume
    volume = max(ZERO, volume)
    price = order.price if order.ord_type is OrdType.LIMIT else reference_price
    if price is None:
        return Remainder(volume, ZERO, is_dust=volume == 0)
    quote = volume * price
    return Remainder(volume, quote, is_dust=quote < min_total)


def outcome_of(order: Order, remainder: Remainder) -> Outcome:
    executed = order.executed_volume > 0
    if order.state not in CLOSED_STATES:
        return Outcome.PARTIALLY_FILLED if executed else Outcome.OPEN
    if order.state is OrderState.DONE or (executed and remainder.is_dust):
        return Outcome.FILLED
    return Outcome.PARTIALLY_CANCELLED if executed else Outcome.CANCELLED


def booking_of(order: Order, min_total: Decimal, reference_price: Decimal | None = None) -> Booking:
    """Everything ``order`` executed so far, as the ledger books it."""
    if order.executed_volume > 0 and not order.trades and order.reported_executed_funds is None:
        raise IncompleteAnswer(
            f"order {order.uuid} executed {order.executed_volume} but the answer has neither trades nor "
            "executed_funds: read it with get_order"
        )
    if order.trades:
        traded = sum((t.volume for t in order.trades), ZERO)
        if traded != order.executed_volume:
            raise IncompleteAnswer(
                f"order {order.uuid}: trades add up to {traded}, executed_volume is {order.executed_volume}"
            )
    remainder = remainder_of(order, min_total, reference_price)
    return Booking(
        side=order.side,
        volume=order.executed_volume,
        funds=order.executed_funds,
        fee=order.paid_fee,
        outcome=outcome_of(order, remainder),
        remainder=remainder,
        trade_uuids=tuple(t.uuid for t in order.trades),
    )


def booking_delta(booked: Booking | None, now: Booking) -> Booking:
    """What ``now`` adds to what ``booked`` (an earlier answer of the same order) already booked."""
    if booked is None:
        return now
    if booked.side is not now.side or now.volume < booked.volume or now.fee < booked.fee:
        raise ValueError("an order's later answer cannot execute less than an earlier one")
    seen = set(booked.trade_uuids)
    return Booking(
        side=now.side,
        volume=now.volume - booked.volume,
        funds=now.funds - booked.funds,
        fee=now.fee - booked.fee,
        outcome=now.outcome,
        remainder=now.remainder,
        trade_uuids=tuple(u for u in now.trade_uuids if u not in seen),
    )
