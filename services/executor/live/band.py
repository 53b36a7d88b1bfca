"""The price band of a live market order, checked against the exchange's book before it is sent (pure).

The paper venue refuses a quote more than ``price_band`` away from the order's reference price
(``core.refuse_out_of_band``). A market order on the exchange has no quote: it takes whatever the
book gives, so a stale or insane reference price, or a thin book, would trade at any price. Before
one is sent, the book (``GET /v1/orderbook``) is walked as the exchange fills the order: a BUY
spends its quote amount over the asks from the best up, a SELL sells its volume over the bids from
the best down. The order is refused ``PRICE_OUT_OF_BAND`` when

* the average price of that walk is outside the band around the reference price, or
* the levels the book shows cannot fill the whole order: the rest would trade at levels nobody has
  seen, at any price (a thin book; Upbit shows the first 30 levels of each side).

The walk is exact (no rounding per level); its average is rounded to the ledger's 8 decimals
against the account (a BUY up, a SELL down), as the booking of what executed is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

from coinpilot.contracts import OrderApproved, RejectReason, Side
from services.executor.core import EIGHT_DP, Rejection, refuse_out_of_band
from services.executor.upbit.models import BookLevel, Orderbook

ZERO = Decimal(0)
_PRECISION = 60  # digits for the walk's divisions: far beyond any price x size on the ledger's scale


@dataclass(frozen=True, slots=True)
class Walk:
    """What the shown levels of one side of a book fill of an order."""

    volume: Decimal
    """Base units filled."""
    funds: Decimal
    """Quote currency those units cost (asks) or bring (bids), before fees."""
    levels: int
    """Levels touched."""
    complete: bool
    """True when the levels fill the whole order."""

    def average_price(self, side: Side) -> Decimal | None:
        """funds / volume to 8 decimals, against the account; None when nothing is filled."""
        if self.volume <= 0:
            return None
        rounding = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
        with localcontext(prec=_PRECISION):
            return (self.funds / self.volume).quantize(EIGHT_DP, rounding=rounding)


def walk_asks(asks: Sequence[BookLevel], amount: Decimal) -> Walk:
    """Spend ``amount`` (quote currency) over ``asks``, best (lowest) first."""
    left, volume, funds, touched = amount, ZERO, ZERO, 0
    with localcontext(prec=_PRECISION):
        for level in asks:
            if left <= 0:
                break
            touched += 1
            cost = level.price * level.size
            if cost >= left:
                volume += left / level.price
                funds += left
                left = ZERO
                break
            volume += level.size
            funds += cost
            left -= cost
    return Walk(volume, funds, touched, complete=amount > 0 and left <= 0)


def walk_bids(bids: Sequence[BookLevel], volume: Decimal) -> Walk:
    """Sell ``volume`` (base units) over ``bids``, best (highest) first."""
    left, sold, funds, touched = volume, ZERO, ZERO, 0
    with localcontext(prec=_PRECISION):
        for level in bids:
            if left <= 0:
                break
            touched += 1
            take = min(left, level.size)
            sold += take
            funds += take * level.price
            left -= take
    return Walk(sold, funds, touched, complete=volume > 0 and left <= 0)


def refuse_off_book(order: OrderApproved, book: Orderbook, size: Decimal, band: Decimal) -> Rejection | None:
    """The order to be sent (a BUY spending ``size`` in the quote currency, a SELL of ``size`` base
    units), refused when the book cannot fill it or fills it at an average outside ``band``."""
    buy = order.side is Side.BUY
    quote, _, base = order.symbol.partition("-")
    side, unit = ("ask", quote) if buy else ("bid", base)
    walk = walk_asks(book.asks, size) if buy else walk_bids(book.bids, size)
    shown = walk.funds if buy else walk.volume
    if not walk.complete:
        return Rejection(
            order,
            RejectReason.PRICE_OUT_OF_BAND,
            f"the {book.market} {side} book shows {len(book.asks if buy else book.bids)} level(s) holding "
            f"{shown.normalize():f} {unit} of the order's {size.normalize():f}: it cannot fill the order, "
            f"the rest would trade at prices not shown (band {band:.2%} around the reference price "
            f"{order.reference_price})",
        )
    average = walk.average_price(order.side)
    assert average is not None  # a complete walk of a positive size filled something
    refused = refuse_out_of_band(order, average, band)
    if refused is None:
        return None
    return Rejection(
        order,
        RejectReason.PRICE_OUT_OF_BAND,
        f"{refused.message}: the average of the {book.market} {side} book over {walk.levels} level(s) "
        f"for {size.normalize():f} {unit}",
    )
