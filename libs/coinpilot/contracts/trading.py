"""Decision and execution messages: signals, orders and fills."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from coinpilot.contracts.base import Contract, Money, Symbol, UtcDatetime, minute_key
from coinpilot.contracts.enums import EntryReason, ExitReason, Regime, RejectReason, RejectStage, Side
from coinpilot.contracts.market import IndicatorSnapshot


class EntrySignal(Contract):
    """The rule engine found an entry (§3.2). Carries the snapshot that justified it."""

    SUBJECT: ClassVar[str] = "signals.entry.{symbol}"

    kind: Literal["entry"] = "entry"
    symbol: Symbol
    price: Money = Field(description="Close of the candle that fired it (quote currency)")
    regime: Regime
    reason: EntryReason = EntryReason.ENTRY_OK
    passed_checks: tuple[str, ...] = ()
    snapshot: IndicatorSnapshot

    def msg_id(self) -> str:
        return f"signal:entry:{self.symbol}:{minute_key(self.ts_event)}"


class ExitSignal(Contract):
    """The rule engine wants to close a position (§3.4)."""

    SUBJECT: ClassVar[str] = "signals.exit.{symbol}"

    kind: Literal["exit"] = "exit"
    symbol: Symbol
    price: Money
    exit_reason: ExitReason
    entry_regime: Regime
    regime: Regime = Field(description="Current regime when the exit fired")
    avg_price: Money
    quantity: Money
    high_water_mark: Money = Field(description="Position high-water mark including this close")
    opened_at: UtcDatetime
    position_id: str = Field(description="Order id of the BUY that opened the position")
    snapshot: IndicatorSnapshot

    def msg_id(self) -> str:
        return f"signal:exit:{self.symbol}:{minute_key(self.ts_event)}"


Signal = Annotated[EntrySignal | ExitSignal, Field(discriminator="kind")]


ORDER_MINUTE_FORMAT = "%Y-%m-%dT%H:%M%z"


def order_id_for(symbol: str, ts_event: datetime, side: Side) -> str:
    """``KRW-BTC:2026-01-01T00:00Z:buy``: the one id every stage gives the order a signal starts.

    Made of the signal's symbol, event minute and side only, so a redelivered or replayed signal
    names the same order (JetStream dedup and the ledger's idempotency rest on it).
    """
    return f"{symbol}:{minute_key(ts_event)}:{side.value.lower()}"


def order_time(order_id: str) -> datetime:
    """The event minute an order id was made from (inverse of :func:`order_id_for`), in UTC."""
    stamp = order_id.split(":", 1)[1].rsplit(":", 1)[0]
    return datetime.strptime(stamp, ORDER_MINUTE_FORMAT).astimezone(UTC)


class OrderProposed(Contract):
    """A risk-approved BUY, sized, waiting for the AI review (§4 -> §5)."""

    SUBJECT: ClassVar[str] = "orders.proposed.{symbol}"

    order_id: str = Field(max_length=64, examples=["KRW-BTC:2026-01-01T00:00Z:buy"])
    symbol: Symbol
    side: Literal[Side.BUY] = Side.BUY
    reference_price: Money = Field(description="Decision price: the signal candle's close")
    amount: Money = Field(gt=0, description="Quote amount to spend, before fees")
    regime: Regime
    vol_multiplier: Decimal = Field(description="Volatility multiplier applied to the size (1.0 or 0.5)")
    signal: EntrySignal

    def msg_id(self) -> str:
        return f"order:proposed:{self.order_id}"


class OrderApproved(Contract):
    """An order the executor must fill: a BUY approved by the agent, or any SELL (exits skip the agent)."""

    SUBJECT: ClassVar[str] = "orders.approved.{symbol}"

    order_id: str = Field(max_length=64)
    symbol: Symbol
    side: Side
    reference_price: Money
    amount: Money | None = Field(default=None, description="BUY: quote amount to spend")
    quantity: Money | None = Field(default=None, description="SELL: base quantity to sell")
    regime: Regime
    approved_by: RejectStage = Field(description="risk for exits, agent for entries")
    signal: Signal

    def msg_id(self) -> str:
        return f"order:approved:{self.order_id}"


class OrderRejected(Contract):
    """A "no" with a reason code, from risk, the agent or the executor."""

    SUBJECT: ClassVar[str] = "orders.rejected.{symbol}"

    order_id: str = Field(max_length=64)
    symbol: Symbol
    side: Side
    stage: RejectStage
    reason: RejectReason
    message: str = ""

    def msg_id(self) -> str:
        return f"order:rejected:{self.stage}:{self.order_id}"


class Fill(Contract):
    """A committed fill. Published only after the ledger transaction commits."""

    SUBJECT: ClassVar[str] = "fills.{symbol}"

    order_id: str = Field(max_length=64)
    symbol: Symbol
    side: Side
    currency: str = Field(examples=["KRW"], description="Quote currency of every amount here")
    decision_price: Money
    fill_price: Money
    quantity: Money
    amount: Money = Field(description="fill_price * quantity (gross)")
    fee: Money
    balance_after: Money
    position_quantity_after: Money
    position_avg_price_after: Money
    realized_pnl: Money | None = Field(
        default=None, description="SELL: (fill - avg) * qty - sell fee (net of this leg's fee)"
    )
    realized_pnl_gross: Money | None = Field(default=None, description="SELL: (fill - avg) * qty")
    entry_avg_price: Money | None = None
    regime: Regime = Field(description="BUY: current regime; SELL: the entry regime")
    exit_reason: ExitReason | None = None
    high_water_mark: Money
    opened_at: UtcDatetime = Field(description="When the position was opened (event time)")

    def msg_id(self) -> str:
        return f"fill:{self.order_id}"
