"""The executor's pure core: an approved order and the ledger in, a fill or a reasoned "no" out.

A check, then two steps, so a live broker can replace the paper venue without touching the
ledger rules:

    refuse_duplicate_buy(ledger, order)        -> Rejection | None        (before any venue is asked)
    quote_paper(order, ledger, params, quote)  -> Execution | Rejection   (what a paper venue fills)
    apply_execution(ledger, order, exec)       -> FillOutcome | Rejection (what the ledger becomes)
    fill_order = the three in that order (the backtest; ``booking.book_order`` does the same with
    its venue, so both give the same answer to the same order)

The price is the venue's ``quote``, never the order's: the paper venue quotes the recorded close
of the order's decision minute (``market_data``; the backtest, the close of the same candle in
memory), a live venue the exchange. The order's reference price only bounds it: a quote more than
``price_band`` away from it is refused (``PRICE_OUT_OF_BAND``, ``refuse_out_of_band``), so a
message that names a price cannot buy or sell at it. (Whether the order is genuine at all is
``provenance``'s question, asked before.)

``apply_execution`` refuses a duplicate BUY as well, so a caller that skipped the check still
cannot average into a position.

One position per symbol: a BUY for a symbol the ledger already holds is refused
(``DUPLICATE_POSITION``). Risk refuses such a signal too, but its pending order expires after
``pending_timeout`` of event time, so when the order path lags the candles by more than that (a
replay at pace max; an agent or executor down for longer, its proposals queued) a second BUY can
be approved before the first one's fill reached risk. Only here, under the ledger's lock, is the
rule checked against the truth. (The original averaged a second BUY into the position, on a path
that was unreachable for it, BEHAVIOUR §6.2.)

Money rules (BEHAVIOUR §6 with the rebuild fixes). Every amount is a ``Decimal`` with at most 8
decimal places, the scale of the ledger (``NUMERIC(20,8)``), and every rounding goes against the
account, so paper trading never creates money:

* ``fill_price`` = quote × (1 ± slippage_bps / 10 000), to 8 dp: a BUY rounds up (pays
  more), a SELL rounds down (receives less).
* BUY ``quantity`` = floor(order amount / fill_price, 8 dp); SELL quantity = the whole position.
* ``amount`` = fill_price × quantity, to 8 dp: BUY up, SELL down (exact whenever the price has few
  decimals, as KRW prices do).
* ``fee`` = amount × fee_rate, rounded up to 8 dp, charged on both sides.
* BUY debits ``amount + fee``; SELL credits ``amount − fee``.
* ``realized_pnl_gross`` = (fill_price − avg_price) × quantity and ``realized_pnl`` = gross − this
  SELL's fee (the BUY leg's fee was already debited when it happened), both to 8 dp half-even.

Every money field of a ``Fill`` carries exactly 8 decimal places, so a fill rebuilt from its
``NUMERIC(20,8)`` row serialises byte for byte like the one first published.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext

from coinpilot.contracts import (
    ExitReason,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderRejected,
    Regime,
    RejectReason,
    RejectStage,
    Side,
)

EIGHT_DP = Decimal("0.00000001")
ZERO = Decimal(0)
BASIS_POINTS = Decimal(10_000)
UPBIT_KRW_FEE_RATE = Decimal("0.0005")
DEFAULT_PRICE_BAND = Decimal("0.02")
DEFAULT_INITIAL_BALANCE = Decimal(10_000_000)

MINUTE = timedelta(minutes=1)


def round_up(value: Decimal) -> Decimal:
    return value.quantize(EIGHT_DP, rounding=ROUND_CEILING)


def round_down(value: Decimal) -> Decimal:
    return value.quantize(EIGHT_DP, rounding=ROUND_FLOOR)


def round_even(value: Decimal) -> Decimal:
    return value.quantize(EIGHT_DP, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class FillParams:
    """How the paper venue fills: slippage in basis points of the quote, fee per side, and how far
    (a fraction) the quote may be from the order's reference price."""

    fee_rate: Decimal = UPBIT_KRW_FEE_RATE
    slippage_bps: Decimal = ZERO
    price_band: Decimal = DEFAULT_PRICE_BAND

    def __post_init__(self) -> None:
        if not self.price_band > 0:
            raise ValueError(f"price_band must be > 0, got {self.price_band}")
        if not ZERO <= self.fee_rate < 1:
            raise ValueError(f"fee_rate must be in [0, 1), got {self.fee_rate}")
        if not ZERO <= self.slippage_bps < BASIS_POINTS:
            raise ValueError(f"slippage_bps must be in [0, 10000), got {self.slippage_bps}")


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    quantity: Decimal
    avg_price: Decimal
    regime: Regime
    high_water_mark: Decimal
    opened_at: datetime
    opened_by: str | None = None  # order id of the BUY that opened it
    is_dust: bool = False
    """Worth less than the exchange's minimum order total (a live SELL of it was refused
    ``BELOW_EXCHANGE_MINIMUM``): held, never sold alone; the next BUY of the symbol adds to it."""


@dataclass(frozen=True, slots=True)
class Ledger:
    """What one fill may touch: the account's cash in its currency and the symbol's position."""

    currency: str
    balance: Decimal
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Execution:
    """What a venue did: price, quantity and fee. ``amount`` is the gross quote value."""

    fill_price: Decimal
    quantity: Decimal
    amount: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class Rejection:
    order: OrderApproved
    reason: RejectReason
    message: str

    def message_out(self) -> OrderRejected:
        return OrderRejected(
            ts_event=self.order.ts_event,
            order_id=self.order.order_id,
            symbol=self.order.symbol,
            side=self.order.side,
            stage=RejectStage.EXECUTOR,
            reason=self.reason,
            message=self.message,
        )


@dataclass(frozen=True, slots=True)
class FillOutcome:
    ledger: Ledger
    fill: Fill


def slipped_price(reference: Decimal, side: Side, slippage_bps: Decimal) -> Decimal:
    """The reference price moved against us by ``slippage_bps``, to 8 dp."""
    if side is Side.BUY:
        return round_up(reference * (BASIS_POINTS + slippage_bps) / BASIS_POINTS)
    return round_down(reference * (BASIS_POINTS - slippage_bps) / BASIS_POINTS)


def fee_for(amount: Decimal, fee_rate: Decimal) -> Decimal:
    return round_up(amount * fee_rate)


def buy_quantity(amount: Decimal, fill_price: Decimal) -> Decimal:
    """floor(amount / price) to 8 dp, computed so the division itself can never round up."""
    with localcontext(prec=60, rounding=ROUND_FLOOR):
        return (amount / fill_price).quantize(EIGHT_DP, rounding=ROUND_FLOOR)


def refuse_out_of_band(order: OrderApproved, quote: Decimal, band: Decimal) -> Rejection | None:
    """A quote more than ``band`` (a fraction) away from the order's reference price: refused."""
    reference = order.reference_price
    if reference > 0 and quote > 0 and abs(quote - reference) <= reference * band:
        return None
    off = f"{abs(quote - reference) / reference:.2%} away from" if reference > 0 else "not comparable with"
    return Rejection(
        order,
        RejectReason.PRICE_OUT_OF_BAND,
        f"venue quote {quote} is {off} the reference price {reference} (band {band:.2%})",
    )


def quote_paper(
    order: OrderApproved, ledger: Ledger, params: FillParams, quote: Decimal
) -> Execution | Rejection:
    """Fill at the venue's quote moved by slippage (a quote out of band is refused); BUY spends the
    order amount, SELL sells the whole position."""
    out_of_band = refuse_out_of_band(order, quote, params.price_band)
    if out_of_band is not None:
        return out_of_band
    price = slipped_price(quote, order.side, params.slippage_bps)
    if order.side is Side.BUY:
        if order.amount is None or order.amount <= 0:
            return Rejection(order, RejectReason.NON_POSITIVE_AMOUNT, f"BUY amount {order.amount}")
        quantity = buy_quantity(order.amount, price)
        if quantity <= 0:
            return Rejection(
                order, RejectReason.QUANTITY_TOO_SMALL, f"{order.amount} buys less than 1e-8 at {price}"
            )
        amount = round_up(price * quantity)
    else:
        position = ledger.position
        if position is None or position.quantity <= 0:
            return Rejection(order, RejectReason.NO_POSITION, f"no {order.symbol} position to sell")
        quantity = round_down(position.quantity)
        amount = round_down(price * quantity)
    return Execution(fill_price=price, quantity=quantity, amount=amount, fee=fee_for(amount, params.fee_rate))


def apply_execution(ledger: Ledger, order: OrderApproved, execution: Execution) -> FillOutcome | Rejection:
    """Book an execution: cash, position and the Fill that tells everyone else."""
    if order.side is Side.BUY:
        return _apply_buy(ledger, order, execution)
    return _apply_sell(ledger, order, execution)


def refuse_duplicate_buy(ledger: Ledger, order: OrderApproved) -> Rejection | None:
    """A BUY for a symbol already held: refused, nothing booked (see the module docstring)."""
    held = ledger.position
    if order.side is not Side.BUY or held is None or held.quantity <= 0 or held.is_dust:
        return None
    return Rejection(
        order,
        RejectReason.DUPLICATE_POSITION,
        f"{order.symbol} is already held ({held.quantity} since {held.opened_at.isoformat()}, "
        f"opened by {held.opened_by})",
    )


def fill_order(
    ledger: Ledger, order: OrderApproved, params: FillParams, quote: Decimal
) -> FillOutcome | Rejection:
    """The paper executor: refuse a duplicate BUY, fill at the quote, then book it."""
    refused = refuse_duplicate_buy(ledger, order)
    if refused is not None:
        return refused
    execution = quote_paper(order, ledger, params, quote)
    if isinstance(execution, Rejection):
        return execution
    return apply_execution(ledger, order, execution)


def _apply_buy(ledger: Ledger, order: OrderApproved, ex: Execution) -> FillOutcome | Rejection:
    refused = refuse_duplicate_buy(ledger, order)
    if refused is not None:
        return refused
    cost = ex.amount + ex.fee
    if ledger.balance < cost:
        return Rejection(
            order,
            RejectReason.INSUFFICIENT_BALANCE,
            f"needs {cost} {ledger.currency} (amount {ex.amount} + fee {ex.fee}), has {ledger.balance}",
        )
    position = Position(
        symbol=order.symbol,
        quantity=ex.quantity,
        avg_price=ex.fill_price,
        regime=order.regime,
        high_water_mark=ex.fill_price,
        opened_at=order.ts_event,
        opened_by=order.order_id,
    )
    dust = ledger.position
    if dust is not None and dust.is_dust and dust.quantity > 0:
        position = _with_dust(position, dust)
    balance = ledger.balance - cost
    fill = Fill(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        side=Side.BUY,
        currency=ledger.currency,
        decision_price=round_even(order.reference_price),
        fill_price=ex.fill_price,
        quantity=ex.quantity,
        amount=ex.amount,
        fee=ex.fee,
        balance_after=balance,
        position_quantity_after=position.quantity,
        position_avg_price_after=position.avg_price,
        regime=order.regime,
        high_water_mark=round_even(position.high_water_mark),
        opened_at=position.opened_at,
    )
    return FillOutcome(Ledger(ledger.currency, balance, position), fill)


def _with_dust(bought: Position, dust: Position) -> Position:
    """A BUY into a symbol whose dust the ledger holds: one position of both, at their average
    price rounded up (against the account: a lower realized PnL), opened by this BUY. The dust is
    then sold with the position."""
    quantity = bought.quantity + dust.quantity
    with localcontext(prec=60):
        cost = bought.quantity * bought.avg_price + dust.quantity * dust.avg_price
        avg = (cost / quantity).quantize(EIGHT_DP, rounding=ROUND_CEILING)
    return Position(
        symbol=bought.symbol,
        quantity=quantity,
        avg_price=avg,
        regime=bought.regime,
        high_water_mark=bought.high_water_mark,
        opened_at=bought.opened_at,
        opened_by=bought.opened_by,
    )


def _apply_sell(ledger: Ledger, order: OrderApproved, ex: Execution) -> FillOutcome | Rejection:
    position = ledger.position
    if position is None or position.quantity <= 0:
        return Rejection(order, RejectReason.NO_POSITION, f"no {order.symbol} position to sell")
    if ex.quantity > position.quantity:
        raise ValueError(f"{order.order_id} sold {ex.quantity}, more than the position's {position.quantity}")
    signal = order.signal
    if (
        isinstance(signal, ExitSignal)
        and position.opened_by is not None
        and signal.position_id != position.opened_by
    ):
        return Rejection(
            order,
            RejectReason.NO_POSITION,
            f"exit is for position {signal.position_id}, the open one is {position.opened_by}",
        )
    gross = round_even((ex.fill_price - position.avg_price) * ex.quantity)
    balance = ledger.balance + ex.amount - ex.fee
    # A live market sell that ran out of book executed part of the position: the rest stays open,
    # at the same average price, under the same id (paper always sells it all).
    left = position.quantity - ex.quantity
    exit_reason: ExitReason | None = signal.exit_reason if isinstance(signal, ExitSignal) else None
    # The exit signal carries the position's real high-water mark (STOP_LOSS included, §6.4 fix).
    hwm = signal.high_water_mark if isinstance(signal, ExitSignal) else position.high_water_mark
    rest = (
        None
        if left <= 0
        else replace(position, quantity=left, high_water_mark=max(hwm, position.high_water_mark))
    )
    fill = Fill(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        side=Side.SELL,
        currency=ledger.currency,
        decision_price=round_even(order.reference_price),
        fill_price=ex.fill_price,
        quantity=ex.quantity,
        amount=ex.amount,
        fee=ex.fee,
        balance_after=balance,
        position_quantity_after=round_even(ZERO if rest is None else rest.quantity),
        position_avg_price_after=round_even(ZERO if rest is None else rest.avg_price),
        realized_pnl=gross - ex.fee,
        realized_pnl_gross=gross,
        entry_avg_price=round_even(position.avg_price),
        regime=position.regime,
        exit_reason=exit_reason,
        high_water_mark=round_even(hwm),
        opened_at=position.opened_at,
    )
    return FillOutcome(Ledger(ledger.currency, balance, rest), fill)


def marks_dust(ledger: Ledger, rejection: Rejection) -> Position | None:
    """The position a SELL refused as dust (``BELOW_EXCHANGE_MINIMUM``) leaves, marked dust; None
    when the rejection says nothing of the kind. From then on the ledger holds it as dust: no
    longer an open position for risk, and a BUY of the symbol adds to it
    (``refuse_duplicate_buy``, ``_with_dust``)."""
    held = ledger.position
    if (
        rejection.order.side is not Side.SELL
        or rejection.reason is not RejectReason.BELOW_EXCHANGE_MINIMUM
        or held is None
        or held.quantity <= 0
        or held.is_dust
    ):
        return None
    return replace(held, is_dust=True)


def decision_minute(order: OrderApproved) -> datetime:
    """Start of the candle the order was decided on: its event time is that candle's close."""
    return order.ts_event - MINUTE


def already_rejected(order: OrderApproved, reason: RejectReason) -> OrderRejected:
    """The answer to an order the executor rejected before (a redelivery gets it again)."""
    return OrderRejected(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        stage=RejectStage.EXECUTOR,
        reason=reason,
        message=f"already rejected: {reason}",
    )
