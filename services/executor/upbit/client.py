"""``UpbitClient``: Upbit's exchange REST API over ``httpx.AsyncClient`` (the I/O edge).

Every private call is signed (``auth``), waits on its rate-limit group (``rate_limit``), retries a
429 a bounded number of times with backoff, and turns every other failure into one of the typed
errors in ``errors``. Answers are parsed into the frozen dataclasses of ``models``.

Orders always carry an ``identifier`` (our deterministic order id). Upbit refuses an identifier it
has seen before, even when that earlier request failed, so a retry can never double an order; a
sent order whose answer was lost raises ``OutcomeUnknown``, and the caller resolves it with
``get_order(identifier=...)``, never by sending it again. Nothing here logs a key or a token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from services.executor.upbit import models
from services.executor.upbit.auth import Credentials, Pairs, authorization, encode_params
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
    Chance,
    Instrument,
    Order,
    Orderbook,
    OrderState,
    OrdType,
    Side,
    TimeInForce,
    is_on_tick,
    to_wire,
)
from services.executor.upbit.rate_limit import RateLimiter

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.upbit.com"
ORDERS = "/v1/orders"

# The group Upbit documents per endpoint; the client switches to the group an answer names.
_DEFAULT_GROUPS = {
    f"POST {ORDERS}": "order",
    "GET /v1/orderbook/instruments": "orderbook",
    "GET /v1/orderbook": "orderbook",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client answers a 429: up to ``max_retries`` more tries, waiting base·2ⁿ (capped)."""

    max_retries: int = 3
    backoff_base_seconds: float = 0.2
    backoff_cap_seconds: float = 2.0

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_cap_seconds, self.backoff_base_seconds * 2**attempt)


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    pairs: Pairs
    signed: bool
    identifier: str | None = None  # set on POST /v1/orders: its failures are OutcomeUnknown
    decimal_numbers: bool = False  # JSON numbers (not strings) read as Decimal, never as float

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


class UpbitClient:
    """Async client of Upbit's exchange API. Use as ``async with UpbitClient(...) as upbit``."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: httpx.Timeout | float = httpx.Timeout(10.0, connect=5.0),
        retry: RetryPolicy = RetryPolicy(),
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._credentials = credentials
        self._retry = retry
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._sleep = sleep if sleep is not None else self._limiter.sleep
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self._instruments: dict[str, Instrument] = {}

    def __repr__(self) -> str:
        return f"UpbitClient(base_url={str(self._http.base_url)!r})"

    async def __aenter__(self) -> UpbitClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    # -- account and market ----------------------------------------------------------------------

    async def accounts(self) -> tuple[Account, ...]:
        return models.parse_accounts(await self._send(_Call("GET", "/v1/accounts", [], True)))

    async def chance(self, market: str) -> Chance:
        """Fees per side, minimum order total per side and both balances for ``market``."""
        pairs = encode_params({"market": market})
        return models.parse_chance(await self._send(_Call("GET", "/v1/orders/chance", pairs, True)))

    async def instruments(self, markets: Sequence[str]) -> dict[str, Instrument]:
        """Tick size per market, read from the exchange (public; remembered for limit orders)."""
        pairs = encode_params({"markets": ",".join(markets)})
        found = models.parse_instruments(
            await self._send(_Call("GET", "/v1/orderbook/instruments", pairs, False))
        )
        self._instruments.update(found)
        return found

    async def orderbooks(self, markets: Sequence[str]) -> dict[str, Orderbook]:
        """``GET /v1/orderbook`` (public): the first levels of each market's book, per market."""
        pairs = encode_params({"markets": ",".join(markets)})
        return models.parse_orderbooks(
            await self._send(_Call("GET", "/v1/orderbook", pairs, False, decimal_numbers=True))
        )

    async def orderbook(self, market: str) -> Orderbook:
        """``market``'s book; ``MalformedAnswer`` if the answer leaves it out."""
        books = await self.orderbooks([market])
        if market not in books:
            raise MalformedAnswer("malformed_answer", f"the orderbook answer has no {market}")
        return books[market]

    async def tick_size(self, market: str) -> Decimal:
        if market not in self._instruments:
            await self.instruments([market])
        if market not in self._instruments:
            raise RequestRefused("unknown_market", f"the exchange lists no instrument {market}")
        return self._instruments[market].tick_size

    # -- orders ----------------------------------------------------------------------------------

    async def place_order(
        self,
        *,
        market: str,
        side: Side,
        ord_type: OrdType,
        identifier: str,
        price: Decimal | None = None,
        volume: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
    ) -> Order:
        """``POST /v1/orders``. Raises ``OutcomeUnknown`` when the order may exist but no answer
        came back, ``DuplicateIdentifier`` when ``identifier`` was used before."""
        if not identifier:
            raise ValueError("an order needs its identifier (our deterministic order id)")
        params: dict[str, str | None] = {
            "market": market,
            "side": str(side),
            "volume": to_wire(volume) if volume is not None else None,
            "price": to_wire(price) if price is not None else None,
            "ord_type": str(ord_type),
            "identifier": identifier,
            "time_in_force": str(time_in_force) if time_in_force is not None else None,
        }
        call = _Call("POST", ORDERS, encode_params(params), True, identifier=identifier)
        raw = await self._send(call)
        try:
            return models.parse_order(raw)
        except MalformedAnswer as e:
            raise OutcomeUnknown(
                e.name, f"order answer unreadable: {e.message}", 201, identifier=identifier
            ) from e

    async def buy_market(self, market: str, krw: Decimal, identifier: str) -> Order:
        """Market buy for a quote amount (``ord_type=price``, ``price`` = the amount)."""
        return await self.place_order(
            market=market, side=Side.BID, ord_type=OrdType.PRICE, price=krw, identifier=identifier
        )

    async def sell_market(self, market: str, volume: Decimal, identifier: str) -> Order:
        """Market sell of a volume (``ord_type=market``)."""
        return await self.place_order(
            market=market, side=Side.ASK, ord_type=OrdType.MARKET, volume=volume, identifier=identifier
        )

    async def place_limit(
        self,
        market: str,
        side: Side,
        price: Decimal,
        volume: Decimal,
        identifier: str,
        *,
        time_in_force: TimeInForce | None = None,
    ) -> Order:
        """Limit order; a price off the exchange's tick is refused here, before anything is sent."""
        tick = await self.tick_size(market)
        if not is_on_tick(price, tick):
            raise OffTickPrice(
                f"invalid_price_{side}",
                f"{market} price {to_wire(price)} is not a multiple of the tick {to_wire(tick)} "
                "(refused locally, not sent)",
            )
        return await self.place_order(
            market=market,
            side=side,
            ord_type=OrdType.LIMIT,
            price=price,
            volume=volume,
            identifier=identifier,
            time_in_force=time_in_force,
        )

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        """One order with its trades. Raises ``OrderNotFound`` when Upbit has none by that key."""
        pairs = encode_params(_one_key(uuid, identifier))
        return models.parse_order(await self._send(_Call("GET", "/v1/order", pairs, True)))

    async def cancel_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        """Ask Upbit to cancel. The answer is the order as it stood when the request was taken
        (usually still ``wait``); ``get_order`` shows the ``cancel`` and what executed before it."""
        pairs = encode_params(_one_key(uuid, identifier))
        return models.parse_order(await self._send(_Call("DELETE", "/v1/order", pairs, True)))

    async def open_orders(
        self,
        market: str | None = None,
        states: Sequence[OrderState] = models.OPEN_STATES,
        *,
        page: int = 1,
        limit: int = 100,
    ) -> tuple[Order, ...]:
        params = {
            "market": market,
            "states[]": [str(s) for s in states],
            "page": str(page),
            "limit": str(limit),
            "order_by": "desc",
        }
        pairs = encode_params(params)
        return models.parse_orders(await self._send(_Call("GET", "/v1/orders/open", pairs, True)))

    async def closed_orders(
        self,
        market: str | None = None,
        states: Sequence[OrderState] = models.CLOSED_STATES,
        *,
        limit: int = 100,
    ) -> tuple[Order, ...]:
        params = {
            "market": market,
            "states[]": [str(s) for s in states],
            "limit": str(limit),
            "order_by": "desc",
        }
        pairs = encode_params(params)
        return models.parse_orders(await self._send(_Call("GET", "/v1/orders/closed", pairs, True)))

    # -- the one request path --------------------------------------------------------------------

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            group = self._limiter.group_of(call.endpoint, _DEFAULT_GROUPS.get(call.endpoint, "default"))
            await self._limiter.acquire(group)
            response = await self._transmit(call)
            self._limiter.observe(call.endpoint, response.headers.get("Remaining-Req"), self._limiter.clock())
            log.debug("upbit %s -> %s", call.endpoint, response.status_code)
            if response.status_code == 429:
                error = _error_of(response)
                if attempt >= self._retry.max_retries:
                    raise RateLimited(
                        error.name, f"still rate limited after {attempt + 1} tries: {error.message}"
                    )
                await self._sleep(self._retry.backoff(attempt))
                attempt += 1
                continue
            return self._answer(call, response)

    async def _transmit(self, call: _Call) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if call.signed:
            # A fresh token (and nonce) per attempt: Upbit refuses a nonce it has seen.
            headers["Authorization"] = authorization(self._credentials, call.pairs)
        try:
            if call.method == "POST":
                return await self._http.post(call.path, json=dict(call.pairs), headers=headers)
            return await self._http.request(call.method, call.path, params=call.pairs, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            # Nothing reached the exchange: safe to repeat, even for an order.
            raise ExchangeUnavailable("connect_error", f"{call.endpoint}: {type(e).__name__}") from e
        except httpx.TransportError as e:
            # Sent, answer lost (read timeout, dropped connection).
            if call.identifier is not None:
                raise OutcomeUnknown(
                    "no_answer",
                    f"order {call.identifier} sent, no answer ({type(e).__name__}): look it up by identifier",
                    identifier=call.identifier,
                ) from e
            raise ExchangeUnavailable("no_answer", f"{call.endpoint}: {type(e).__name__}") from e

    def _answer(self, call: _Call, response: httpx.Response) -> Any:
        status = response.status_code
        if status < 300:
            try:
                return response.json(parse_float=Decimal) if call.decimal_numbers else response.json()
            except ValueError as e:
                if call.identifier is not None:
                    raise OutcomeUnknown(
                        "malformed_answer",
                        f"order {call.identifier} answered {status}, not JSON",
                        status,
                        identifier=call.identifier,
                    ) from e
                raise MalformedAnswer(
                    "malformed_answer", f"{call.endpoint}: answer is not JSON", status
                ) from e
        error = _error_of(response)
        if status == 418:
            raise Blocked(error.name, error.message, status)
        if status >= 500:
            if call.identifier is not None:
                raise OutcomeUnknown(
                    error.name,
                    f"order {call.identifier} answered {status}: it may exist, look it up by identifier",
                    status,
                    identifier=call.identifier,
                )
            raise ExchangeUnavailable(error.name, error.message, status)
        if status in (401, 403):
            raise Unauthorized(error.name, error.message, status)
        if status == 404 and error.name == "order_not_found":
            raise OrderNotFound(error.name, error.message, status)
        if call.path in (ORDERS, "/v1/order"):
            if "identifier" in error.name:
                raise DuplicateIdentifier(error.name, error.message, status)
            if error.name.startswith("invalid_price"):
                raise OffTickPrice(error.name, error.message, status)
            raise OrderRefused(error.name, error.message, status)
        raise RequestRefused(error.name, error.message, status)


def _one_key(uuid: str | None, identifier: str | None) -> dict[str, str | None]:
    if (uuid is None) == (identifier is None):
        raise ValueError("give exactly one of uuid= or identifier=")
    return {"uuid": uuid, "identifier": identifier}


def _error_of(response: httpx.Response) -> UpbitError:
    """Upbit's ``{"error": {"name", "message"}}`` body, or the status when the body is not that."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("name"), str | int):
        return UpbitError(str(error["name"]), str(error.get("message", "")), response.status_code)
    text = response.text[:200] if response.text else response.reason_phrase
    return UpbitError(f"http_{response.status_code}", text, response.status_code)
