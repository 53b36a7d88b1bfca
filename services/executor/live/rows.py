"""A ``venue_orders`` row and what one exchange answer changes in it (pure values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.executor.live.states import VenueState

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class VenueOrderRow:
    """One order as the venue recorded it."""

    run_id: str
    order_id: str
    identifier: str
    market: str
    side: str
    ord_type: str
    amount: Decimal | None
    volume: Decimal | None
    min_total: Decimal
    state: VenueState = VenueState.INTENDED
    exchange_uuid: str | None = None
    exchange_state: str | None = None
    executed_volume: Decimal = ZERO
    funds: Decimal = ZERO
    paid_fee: Decimal = ZERO
    trades: list[dict[str, Any]] = field(default_factory=list)
    remainder: Decimal | None = None
    dust: bool = False
    last_error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """What one answer of the exchange says about an order, as the row records it."""

    state: VenueState
    exchange_uuid: str | None = None
    exchange_state: str | None = None
    executed_volume: Decimal = ZERO
    funds: Decimal = ZERO
    paid_fee: Decimal = ZERO
    trades: list[dict[str, Any]] = field(default_factory=list)
    remainder: Decimal | None = None
    dust: bool = False
    last_error: str | None = None
