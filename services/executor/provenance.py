"""Who stands behind an order: the executor fills only what risk recorded and the agent confirmed.

Anyone who can publish ``orders.approved.<SYM>`` could otherwise move money (issue 19). Risk
writes every order it approves to ``order_proposals`` in the transaction of its verdict; the agent
writes its verdict to ``agent_decisions`` before it publishes the order. An order that matches
neither is forged or corrupt: it is *refused* (:class:`Refusal`, raised as
``coinpilot.errors.RefusedMessage``: dead-lettered with its rule, a CRITICAL ``ORDER_REFUSED``
alert published), never *rejected*. A rejection on ``orders.rejected`` makes strategy and risk free
the symbol, which a forger must not be able to cause; and a refusal writes nothing to the ledger.

Pure: the records come in as :class:`Provenance`, read in the statement that loads the order's
ledger (``state._READ_ORDER``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from coinpilot.contracts import (
    AiVerdict,
    AlertLevel,
    AlertType,
    OrderApproved,
    OrderProposed,
    RiskAlert,
    Side,
)
from coinpilot.errors import RefusedMessage

EIGHT_DP = Decimal("0.00000001")
NOT_PROPOSED = "ORDER_NOT_PROPOSED"
NOT_AS_PROPOSED = "ORDER_NOT_AS_PROPOSED"
AMOUNT_ABOVE_SIZED = "AMOUNT_ABOVE_SIZED"
NOT_CONFIRMED = "AGENT_NOT_CONFIRMED"


@dataclass(frozen=True, slots=True)
class Proposal:
    """An order as risk approved it (a row of ``order_proposals``)."""

    symbol: str
    side: Side
    amount: Decimal | None
    """BUY: the sized quote amount, the most the order may spend."""
    reference_price: Decimal
    needs_confirmation: bool
    """A BUY routed to the agent (``orders.proposed``): filled only after its CONFIRM."""
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class Provenance:
    """Risk's record of an order and the agent's verdict on it, each None when there is none."""

    proposal: Proposal | None = None
    agent_decision: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """An order no one approved as it stands, with the rule it broke."""

    order: OrderApproved
    rule: str
    message: str

    def alert(self) -> RiskAlert:
        return RiskAlert(
            ts_event=self.order.ts_event,
            type=AlertType.ORDER_REFUSED,
            level=AlertLevel.CRITICAL,
            message=f"order {self.order.order_id} refused ({self.rule}): {self.message}",
            symbol=self.order.symbol,
        )

    def error(self) -> RefusedMessage:
        """What the handler raises: the ladder dead-letters the order and publishes the alert."""
        return RefusedMessage(self.rule, self.message, alerts=(self.alert(),))


def proposal_of(order: OrderProposed | OrderApproved) -> Proposal:
    """The record of an order risk approved, as ``order_proposals`` keeps it (NUMERIC(20,8), which
    PostgreSQL rounds half away from zero): what an in-memory ledger holds for it."""
    amount = order.amount.quantize(EIGHT_DP, rounding=ROUND_HALF_UP) if order.amount is not None else None
    return Proposal(
        symbol=order.symbol,
        side=order.side,
        amount=amount,
        reference_price=order.reference_price.quantize(EIGHT_DP, rounding=ROUND_HALF_UP),
        needs_confirmation=isinstance(order, OrderProposed),
        ts_event=order.ts_event,
    )


def check_provenance(order: OrderApproved, provenance: Provenance) -> Refusal | None:
    """None when ``order`` is the one risk approved (and the agent confirmed, where it reviews).

    The order must name the recorded symbol, side, event time and reference price; a BUY may
    spend at most the sized amount. A SELL's quantity is never taken from the order (the executor
    sells what the ledger holds), so its record needs no quantity.
    """
    proposal = provenance.proposal
    if proposal is None:
        return Refusal(order, NOT_PROPOSED, f"risk recorded no approval of {order.order_id}")
    recorded = (proposal.symbol, proposal.side, proposal.ts_event, proposal.reference_price)
    # the record is NUMERIC(20,8), which PostgreSQL rounds half away from zero
    price = order.reference_price.quantize(EIGHT_DP, rounding=ROUND_HALF_UP)
    named = (order.symbol, order.side, order.ts_event, price)
    if named != recorded:
        return Refusal(
            order,
            NOT_AS_PROPOSED,
            "symbol, side, time, reference price "
            f"{_describe(named)} differ from risk's record {_describe(recorded)}",
        )
    if order.side is Side.BUY:
        sized = proposal.amount
        if sized is None or order.amount is None or not 0 < order.amount <= sized:
            return Refusal(order, AMOUNT_ABOVE_SIZED, f"BUY amount {order.amount}, risk sized {sized}")
        if proposal.needs_confirmation and provenance.agent_decision != AiVerdict.CONFIRM:
            verdict = provenance.agent_decision or "no decision"
            return Refusal(order, NOT_CONFIRMED, f"the agent's verdict on the BUY is {verdict}, not CONFIRM")
    return None


def _describe(fields: tuple[object, ...]) -> str:
    return "(" + ", ".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in fields) + ")"
