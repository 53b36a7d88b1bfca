"""What can go wrong talking to Upbit, named by what the caller must do.

UpbitError                      every failure the client raises: Upbit's ``name``, ``message``, ``status``
 ├── RateLimited                HTTP 429 still refused after the client's bounded backoff: transient
 │                              (a ``coinpilot.errors.RateLimitedError``), retry later
 ├── ExchangeUnavailable        5xx, connect errors, timeouts of a request that changes nothing: transient
 │                              (a ``TransientError``), retry later
 ├── Blocked                    HTTP 418, Upbit blocked the IP or account: never retried; halt new orders
 │                              and raise a CRITICAL alert
 ├── OutcomeUnknown             ``POST /v1/orders`` sent but unanswered (timeout, dropped connection, 5xx,
 │                              an unreadable answer): the exchange may hold the order. Look it up by
 │                              ``identifier``; never send it again
 ├── MalformedAnswer            a 2xx answer that does not parse (a ``PermanentError``)
 └── RequestRefused             4xx: the request can never succeed as sent (a ``PermanentError``)
      ├── Unauthorized          401/403: keys, IP allow-list or permissions; halt until an operator acts
      ├── OrderNotFound         404 ``order_not_found``: no such order (by uuid or identifier)
      └── OrderRefused          an order refused by rule: funds, minimum total, tick, parameters
           ├── OffTickPrice     a limit price off the tick (refused locally before sending, or by Upbit)
           └── DuplicateIdentifier  the identifier was used before: the earlier order (if any) is the one;
                                look it up, never place it again under another identifier blindly
"""

from __future__ import annotations

from coinpilot.errors import CoinPilotError, PermanentError, RateLimitedError, TransientError


class UpbitError(CoinPilotError):
    """Raised for any failure of an Upbit call; ``name`` is Upbit's error name (or a local one)."""

    def __init__(self, name: str, message: str, status: int | None = None) -> None:
        Exception.__init__(self, f"{status if status is not None else 'local'} {name}: {message}")
        self.name = name
        self.message = message
        self.status = status


class RateLimited(UpbitError, RateLimitedError):
    """Raised when Upbit still answers 429 after the client's bounded backoff."""

    def __init__(self, name: str, message: str, status: int | None = 429, retry_after: float | None = None):
        UpbitError.__init__(self, name, message, status)
        self.retry_after = retry_after


class ExchangeUnavailable(UpbitError, TransientError):
    """Raised on 5xx, a refused connection or a timeout of a call that is safe to repeat."""


class Blocked(UpbitError):
    """Raised on HTTP 418: Upbit blocked us for sending on after 429s. Never retried by the client."""


class OutcomeUnknown(UpbitError):
    """Raised when an order was sent and no definite answer came back; ``identifier`` finds it."""

    def __init__(self, name: str, message: str, status: int | None = None, *, identifier: str) -> None:
        UpbitError.__init__(self, name, message, status)
        self.identifier = identifier


class MalformedAnswer(UpbitError, PermanentError):
    """Raised when a successful answer does not parse into what the endpoint returns."""


class RequestRefused(UpbitError, PermanentError):
    """Raised on a 4xx answer other than 429 and 418."""


class Unauthorized(RequestRefused):
    """Raised on 401/403 (bad signature, expired key, IP not allowed, missing permission)."""


class OrderNotFound(RequestRefused):
    """Raised when Upbit knows no order by that uuid or identifier (404 ``order_not_found``)."""


class OrderRefused(RequestRefused):
    """Raised when Upbit (or the local tick check) refuses an order or its cancellation."""


class OffTickPrice(OrderRefused):
    """Raised when a limit price is not a multiple of the market's tick size."""


class DuplicateIdentifier(OrderRefused):
    """Raised when the order's identifier was used before, whether that order succeeded or not."""
