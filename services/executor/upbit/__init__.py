"""Upbit's exchange REST API: signed requests, rate limits, typed answers and typed failures.

The client only talks to the exchange; the executor's order state machine decides what to send.
"""

from services.executor.upbit.auth import Credentials
from services.executor.upbit.client import DEFAULT_BASE_URL, RetryPolicy, UpbitClient
from services.executor.upbit.errors import (
    Blocked,
    DuplicateIdentifier,
    ExchangeUnavailable,
    MalformedAnswer,
    OffTickPrice,
    OrderNotFound,
    OrderRefused,
    OutcomeUnknown,
    RateLimited,
    RequestRefused,
    Unauthorized,
    UpbitError,
)
from services.executor.upbit.models import (
    Account,
    BookLevel,
    Chance,
    Instrument,
    Order,
    Orderbook,
    OrderState,
    OrdType,
    Side,
    TimeInForce,
    Trade,
)
from services.executor.upbit.orders import (
    Booking,
    IncompleteAnswer,
    Outcome,
    Remainder,
    booking_delta,
    booking_of,
)
from services.executor.upbit.rate_limit import RateLimiter, Remaining, parse_remaining_req

__all__ = [
    "DEFAULT_BASE_URL",
    "Account",
    "Blocked",
    "BookLevel",
    "Booking",
    "Chance",
    "Credentials",
    "DuplicateIdentifier",
    "ExchangeUnavailable",
    "IncompleteAnswer",
    "Instrument",
    "MalformedAnswer",
    "OffTickPrice",
    "OrdType",
    "Order",
    "OrderNotFound",
    "OrderRefused",
    "OrderState",
    "Orderbook",
    "Outcome",
    "OutcomeUnknown",
    "RateLimited",
    "RateLimiter",
    "Remainder",
    "Remaining",
    "RequestRefused",
    "RetryPolicy",
    "Side",
    "TimeInForce",
    "Trade",
    "Unauthorized",
    "UpbitClient",
    "UpbitError",
    "booking_delta",
    "booking_of",
    "parse_remaining_req",
]
