"""A local fake of Upbit's exchange REST API, for tests: one uvicorn server on 127.0.0.1.

It speaks Upbit's wire format (numbers as strings, ``{"error": {"name", "message"}}`` errors,
``Remaining-Req`` headers) so the real ``UpbitClient`` is tested against it unchanged:

* **Auth** as Upbit checks it: ``Authorization: Bearer <JWT>`` signed with the secret key (HS256 or
  HS512), the right ``access_key``, a ``nonce`` never seen before (``nonce_used``), and for a request
  with parameters a ``query_hash`` recomputed here from the query string or JSON body actually
  received (``invalid_query_payload`` when it differs). Public endpoints need no token.
* **State**: accounts (balance, locked, avg_buy_price per currency), markets (tick size, minimum
  totals, fees) and an order book per market whose levels a test sets (``set_book``), quoted by the
  public ``GET /v1/orderbook`` as Upbit does (its first 30 levels per side, numbers as JSON numbers;
  ``move_book_after_next_quote`` moves the book right after the next quotation, as a real book moves
  between a quote and the order that follows it). Orders match
  against the book as takers with partial fills and consume it; resting limit orders fill when a
  later ``set_book`` crosses them. A market buy by KRW amount that exhausts the book, or whose
  leftover cannot buy one more 1e-8 unit, ends ``cancel`` with what executed (Upbit's behaviour).
  Fees are charged per trade (``paid_fee``), KRW is reserved with the fee (``locked``).
* **Refusals** with Upbit's error names: ``insufficient_funds_bid/ask``, ``under_min_total_bid/ask``,
  ``invalid_price_bid/ask`` (off tick), ``create_bid_error``/``create_ask_error`` (parameters that do
  not fit the order type), ``validation_error``, 404 ``order_not_found``. A reused identifier is
  refused as 400 ``duplicate_identifier``: Upbit documents that an identifier can never be sent again,
  even when its first request failed, but not the error's name, so the name is this fake's (as is
  the 418 body's ``blocked``; Upbit documents the status and a block time, not a name).
* **Faults** to inject: ``fail_next`` (any status, e.g. 429 for the next N requests, 500/503),
  ``block`` (418 until ``unblock``), ``delay_next`` (answer late), ``accept_then_hang`` (the order is
  booked, its answer held until the test releases it or the server stops: the client times out).
* **Inspection**: ``orders``, ``trades``, ``holding(currency)``, ``requests`` (method, path, query,
  body, status, group, nonce: never the token or a key).

Limits: ``best`` orders and ``post_only`` are refused as ``validation_error``; the rate limit is
counted per group over one-second windows (``order`` 12/s, ``default`` 30/s, ``orderbook`` 10/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import time
import uuid as uuidlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import free_port, wait_for

TEST_ACCESS_KEY = "fake-upbit-access-0123456789abcdefghij"
TEST_SECRET_KEY = "fake-upbit-secret-zyxwvutsrqponmlkjihg"
KST = timezone(timedelta(hours=9))
ZERO = Decimal(0)
UNIT = Decimal("0.00000001")  # Upbit volumes have at most 8 decimals
DEFAULT_LIMITS = {"order": 12, "default": 30, "orderbook": 10}
BOOK_UNITS = 30  # levels per side that GET /v1/orderbook shows

_trade_ids = itertools.count(1)


def _s(value: Decimal | None) -> str | None:
    """A Decimal the way Upbit writes numbers: a string, at least one decimal place."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text
    return text + ".0"


def _fee(funds: Decimal, rate: Decimal) -> Decimal:
    return (funds * rate).quantize(UNIT, rounding=ROUND_HALF_UP)


class Refusal(Exception):
    """An Upbit error answer: ``status`` and ``{"error": {"name", "message"}}``."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(f"{status} {name}: {message}")
        self.status, self.name, self.message = status, name, message


@dataclass
class Holding:
    balance: Decimal = ZERO
    locked: Decimal = ZERO
    avg_buy_price: Decimal = ZERO


@dataclass
class Level:
    price: Decimal
    size: Decimal


@dataclass
class MarketSpec:
    tick_size: Decimal = Decimal(1000)
    bid_min_total: Decimal = Decimal(5000)
    ask_min_total: Decimal = Decimal(5000)
    bid_fee: Decimal = Decimal("0.0005")
    ask_fee: Decimal = Decimal("0.0005")
    max_total: Decimal = Decimal(1_000_000_000)
    asks: list[Level] = field(default_factory=list)  # ascending price
    bids: list[Level] = field(default_factory=list)  # descending price


@dataclass(frozen=True)
class FakeTrade:
    market: str
    uuid: str
    order_uuid: str
    side: str
    price: Decimal
    volume: Decimal
    funds: Decimal
    fee: Decimal
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "market": self.market,
            "uuid": self.uuid,
            "price": _s(self.price),
            "volume": _s(self.volume),
            "funds": _s(self.funds),
            "trend": "up" if self.side == "bid" else "down",
            "created_at": self.created_at.isoformat(),
            "side": self.side,
        }


@dataclass
class FakeOrder:
    uuid: str
    identifier: str | None
    market: str
    side: str
    ord_type: str
    price: Decimal | None
    volume: Decimal | None
    time_in_force: str | None
    created_at: datetime
    state: str = "wait"
    executed_volume: Decimal = ZERO
    reserved_fee: Decimal = ZERO
    paid_fee: Decimal = ZERO
    locked: Decimal = ZERO
    trades: list[FakeTrade] = field(default_factory=list)

    @property
    def remaining_volume(self) -> Decimal | None:
        return None if self.volume is None else self.volume - self.executed_volume

    @property
    def executed_funds(self) -> Decimal:
        return sum((t.funds for t in self.trades), ZERO)

    @property
    def is_open(self) -> bool:
        return self.state in ("wait", "watch")

    def to_json(self, *, with_trades: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uuid": self.uuid,
            "side": self.side,
            "ord_type": self.ord_type,
            "price": _s(self.price),
            "state": self.state,
            "market": self.market,
            "created_at": self.created_at.isoformat(),
            "volume": _s(self.volume),
            "remaining_volume": _s(self.remaining_volume),
            "reserved_fee": _s(self.reserved_fee),
            "remaining_fee": _s(max(ZERO, self.reserved_fee - self.paid_fee) if self.is_open else ZERO),
            "paid_fee": _s(self.paid_fee),
            "locked": _s(self.locked),
            "executed_volume": _s(self.executed_volume),
            "executed_funds": _s(self.executed_funds),
            "prevented_volume": "0",
            "prevented_locked": "0",
            "trades_count": len(self.trades),
        }
        if self.identifier is not None:
            out["identifier"] = self.identifier
        if self.time_in_force is not None:
            out["time_in_force"] = self.time_in_force
        if with_trades:
            out["trades"] = [t.to_json() for t in self.trades]
        return out


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the fake saw it, minus its token: what a test may print or compare."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: dict[str, Any] | None
    status: int
    group: str
    nonce: str | None


@dataclass
class Fault:
    status: int | None = None
    name: str = ""
    message: str = ""
    delay: float = 0.0
    hang_after_accept: bool = False
    method: str | None = None
    path: str | None = None
    times: int | None = 1  # None: until cleared

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path == path)


_DEFAULT_ERROR = {
    418: ("blocked", "Blocked for sending on after 429 answers; retry after 60 seconds."),
    429: ("too_many_requests", "Too many API requests."),
    500: ("server_error", "Internal server error."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


@dataclass
class FakeUpbit:
    """The fake exchange. ``async with FakeUpbit() as fake`` starts it; ``fake.url`` is the base URL."""

    access_key: str = TEST_ACCESS_KEY
    secret_key: str = TEST_SECRET_KEY
    port: int = field(default_factory=free_port)
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    markets: dict[str, MarketSpec] = field(default_factory=dict)
    holdings: dict[str, Holding] = field(default_factory=dict)
    orders: list[FakeOrder] = field(default_factory=list)
    trades: list[FakeTrade] = field(default_factory=list)
    requests: list[LoggedRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _identifiers: set[str] = field(default_factory=set)
    _nonces: set[str] = field(default_factory=set)
    _tokens: list[str] = field(default_factory=list)
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)
    _after_quote: dict[str, dict[str, Any]] = field(default_factory=dict)
    _release: asyncio.Event | None = None
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test set-up ---------------------------------------------------------------------------

    def add_market(self, market: str, **spec: Any) -> MarketSpec:
        values = {
            k: Decimal(str(v)) if isinstance(v, int | str | float | Decimal) else v for k, v in spec.items()
        }
        self.markets[market] = MarketSpec(**values)
        return self.markets[market]

    def set_balance(self, currency: str, balance: Decimal | str, avg_buy_price: Decimal | str = ZERO) -> None:
        self.holdings[currency] = Holding(Decimal(balance), ZERO, Decimal(avg_buy_price))

    def set_book(
        self,
        market: str,
        *,
        asks: Sequence[tuple[Decimal | str, Decimal | str]] | None = None,
        bids: Sequence[tuple[Decimal | str, Decimal | str]] | None = None,
    ) -> None:
        """Replace a side (or both) of ``market``'s book; resting orders that now cross are filled."""
        spec = self.markets[market]
        if asks is not None:
            spec.asks = sorted((Level(Decimal(p), Decimal(s)) for p, s in asks), key=lambda lv: lv.price)
        if bids is not None:
            spec.bids = sorted(
                (Level(Decimal(p), Decimal(s)) for p, s in bids), key=lambda lv: lv.price, reverse=True
            )
        for order in self.orders:
            if order.market == market and order.is_open and order.ord_type == "limit":
                self._match_limit(order, spec, maker=True)

    def move_book_after_next_quote(
        self,
        market: str,
        *,
        asks: Sequence[tuple[Decimal | str, Decimal | str]] | None = None,
        bids: Sequence[tuple[Decimal | str, Decimal | str]] | None = None,
    ) -> None:
        """``set_book(market, asks=, bids=)`` right after the next ``GET /v1/orderbook`` of ``market``
        is answered: the quote shows the book as it was, the order that follows meets the new one."""
        self._after_quote[market] = {"asks": asks, "bids": bids}

    # -- faults --------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int | None = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        name: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (before auth and the book)."""
        default = _DEFAULT_ERROR.get(status, (f"http_{status}", "Injected failure."))
        self.faults.append(
            Fault(status, name or default[0], message or default[1], method=method, path=path, times=times)
        )

    def block(self) -> None:
        """Answer 418 to everything until ``unblock``."""
        self.fail_next(418, times=None)

    def unblock(self) -> None:
        self.faults = [f for f in self.faults if f.status != 418]

    def delay_next(
        self, seconds: float, times: int | None = 1, *, method: str | None = None, path: str | None = None
    ) -> None:
        self.faults.append(Fault(delay=seconds, method=method, path=path, times=times))

    def accept_then_hang(self, times: int = 1) -> None:
        """Book the next ``times`` orders, then hold their answers until ``release`` or ``stop``."""
        self.faults.append(Fault(hang_after_accept=True, method="POST", path="/v1/orders", times=times))

    def release(self) -> None:
        if self._release is not None:
            self._release.set()

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- inspection ----------------------------------------------------------------------------

    def holding(self, currency: str) -> Holding:
        return self.holdings.setdefault(currency, Holding())

    def orders_by_identifier(self, identifier: str) -> list[FakeOrder]:
        return [o for o in self.orders if o.identifier == identifier]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        )

    @property
    def tokens_seen(self) -> tuple[str, ...]:
        """The bearer tokens received (kept apart from ``requests``), so a test can look for leaks."""
        return tuple(self._tokens)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeUpbit:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._release = asyncio.Event()
        app = Starlette(
            routes=[
                Route("/v1/accounts", self._accounts, methods=["GET"]),
                Route("/v1/orders/chance", self._chance, methods=["GET"]),
                Route("/v1/orderbook/instruments", self._instruments, methods=["GET"]),
                Route("/v1/orderbook", self._orderbook, methods=["GET"]),
                Route("/v1/orders", self._place, methods=["POST"]),
                Route("/v1/order", self._get_order, methods=["GET"]),
                Route("/v1/order", self._cancel, methods=["DELETE"]),
                Route("/v1/orders/open", self._open_orders, methods=["GET"]),
                Route("/v1/orders/closed", self._closed_orders, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        server = self._server
        await wait_for(lambda: server.started, timeout=10.0)

    async def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    # -- the request pipeline ------------------------------------------------------------------

    async def _serve(self, request: Request, group: str, handler: Any, *, signed: bool = True) -> Response:
        method, path = request.method, request.url.path
        query = tuple(parse_qsl(request.url.query, keep_blank_values=True))
        body: dict[str, Any] | None = None
        raw = await request.body()
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer "):
            self._tokens.append(bearer.removeprefix("Bearer "))
        nonce: str | None = None
        status, payload, hang = 500, None, False
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise Refusal(400, "validation_error", "The body is not JSON.") from e
                if not isinstance(body, dict):
                    body = None
                    raise Refusal(400, "validation_error", "The body is not a JSON object.")
            fault = self._take_fault(method, path)
            if fault is not None and fault.delay:
                await asyncio.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                raise Refusal(fault.status, fault.name, fault.message)
            hang = fault is not None and fault.hang_after_accept
            self._count_rate(group)
            if signed:
                nonce = self._authenticate(request, query, body)
            status, payload = handler(dict(query), query, body or {})
        except Refusal as e:
            status, payload = e.status, {"error": {"name": e.name, "message": e.message}}
        self.requests.append(LoggedRequest(method, path, query, body, status, group, nonce))
        headers = {"Remaining-Req": self._remaining_header(group, status)}
        if hang and status < 300:
            assert self._release is not None
            await self._release.wait()
        return Response(_json(payload), status_code=status, headers=headers, media_type="application/json")

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def _count_rate(self, group: str) -> None:
        now = time.monotonic()
        start, count = self._windows.get(group, (now, 0))
        if now - start >= 1.0:
            start, count = now, 0
        count += 1
        self._windows[group] = (start, count)
        if count > self.limits.get(group, 30):
            raise Refusal(429, "too_many_requests", "Too many API requests.")

    def _remaining_header(self, group: str, status: int) -> str:
        limit = self.limits.get(group, 30)
        start, count = self._windows.get(group, (0.0, 0))
        left = limit - count if time.monotonic() - start < 1.0 else limit
        if status == 429:
            left = 0
        return f"group={group}; min=1800; sec={max(0, left)}"

    def _authenticate(
        self, request: Request, query: tuple[tuple[str, str], ...], body: dict[str, Any] | None
    ) -> str:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Refusal(401, "jwt_verification", "Authorization: Bearer <token> is missing.")
        token = header.removeprefix("Bearer ")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                claims = jwt.decode(token, self.secret_key, algorithms=["HS256", "HS512"])
        except jwt.PyJWTError as e:
            raise Refusal(401, "jwt_verification", f"JWT verification failed: {type(e).__name__}.") from e
        if claims.get("access_key") != self.access_key:
            raise Refusal(401, "invalid_access_key", "The access key is not registered.")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise Refusal(401, "invalid_query_payload", "The nonce is missing.")
        if nonce in self._nonces:
            raise Refusal(401, "nonce_used", "This nonce was used before.")
        self._nonces.add(nonce)
        pairs = list(query) if query else _body_pairs(body or {})
        if pairs or "query_hash" in claims:
            expected = hashlib.sha512(unquote(urlencode(pairs)).encode("utf-8")).hexdigest()
            if claims.get("query_hash") != expected or claims.get("query_hash_alg", "SHA512") != "SHA512":
                raise Refusal(401, "invalid_query_payload", "query_hash does not match the parameters.")
        return nonce

    # -- endpoints -----------------------------------------------------------------------------

    async def _accounts(self, request: Request) -> Response:
        def handle(*_: Any) -> tuple[int, Any]:
            return 200, [self._account_json(c, h) for c, h in self.holdings.items()]

        return await self._serve(request, "default", handle)

    async def _chance(self, request: Request) -> Response:
        def handle(params: dict[str, str], *_: Any) -> tuple[int, Any]:
            market = params.get("market")
            if market is None:
                raise Refusal(400, "validation_error", "market is missing.")
            spec = self._spec(market)
            quote, base = market.split("-", 1)
            return 200, {
                "bid_fee": _s(spec.bid_fee),
                "ask_fee": _s(spec.ask_fee),
                "maker_bid_fee": _s(spec.bid_fee),
                "maker_ask_fee": _s(spec.ask_fee),
                "market": {
                    "id": market,
                    "name": f"{base}/{quote}",
                    "order_types": ["limit"],
                    "order_sides": ["ask", "bid"],
                    "bid_types": ["limit", "price"],
                    "ask_types": ["limit", "market"],
                    "bid": {"currency": quote, "min_total": format(spec.bid_min_total, "f")},
                    "ask": {"currency": base, "min_total": format(spec.ask_min_total, "f")},
                    "max_total": format(spec.max_total, "f"),
                    "state": "active",
                },
                "bid_account": self._account_json(quote, self.holding(quote)),
                "ask_account": self._account_json(base, self.holding(base)),
            }

        return await self._serve(request, "default", handle)

    async def _instruments(self, request: Request) -> Response:
        def handle(params: dict[str, str], *_: Any) -> tuple[int, Any]:
            wanted = [m.strip() for m in params.get("markets", "").split(",") if m.strip()]
            if not wanted or any(m not in self.markets for m in wanted):
                raise Refusal(404, "404", "Code not found")
            return 200, [
                {
                    "market": m,
                    "quote_currency": m.split("-", 1)[0],
                    "tick_size": format(self.markets[m].tick_size, "f"),
                    "supported_levels": [format(self.markets[m].tick_size, "f")],
                }
                for m in wanted
            ]

        return await self._serve(request, "orderbook", handle, signed=False)

    async def _orderbook(self, request: Request) -> Response:
        def handle(params: dict[str, str], *_: Any) -> tuple[int, Any]:
            wanted = [m.strip() for m in params.get("markets", "").split(",") if m.strip()]
            if not wanted or any(m not in self.markets for m in wanted):
                raise Refusal(404, "404", "Code not found")
            answer = [self._book_json(m) for m in wanted]
            for market in wanted:
                move = self._after_quote.pop(market, None)
                if move is not None:
                    self.set_book(market, **move)
            return 200, answer

        return await self._serve(request, "orderbook", handle, signed=False)

    def _book_json(self, market: str) -> dict[str, Any]:
        """One market's book as Upbit shows it: level pairs, numbers as JSON numbers (Decimals here,
        written exactly); a side shorter than the other is padded with zero levels."""
        spec = self.markets[market]
        asks, bids = spec.asks[:BOOK_UNITS], spec.bids[:BOOK_UNITS]
        empty = Level(ZERO, ZERO)
        units = [
            {
                "ask_price": (asks[i] if i < len(asks) else empty).price,
                "bid_price": (bids[i] if i < len(bids) else empty).price,
                "ask_size": (asks[i] if i < len(asks) else empty).size,
                "bid_size": (bids[i] if i < len(bids) else empty).size,
            }
            for i in range(max(len(asks), len(bids)))
        ]
        return {
            "market": market,
            "timestamp": int(time.time() * 1000),
            "total_ask_size": sum((lv.size for lv in asks), ZERO),
            "total_bid_size": sum((lv.size for lv in bids), ZERO),
            "orderbook_units": units,
            "level": 0,
        }

    async def _place(self, request: Request) -> Response:
        def handle(_: Any, __: Any, body: dict[str, Any]) -> tuple[int, Any]:
            return 201, self._new_order(body).to_json()

        return await self._serve(request, "order", handle)

    async def _get_order(self, request: Request) -> Response:
        def handle(params: dict[str, str], *_: Any) -> tuple[int, Any]:
            return 200, self._find(params).to_json(with_trades=True)

        return await self._serve(request, "default", handle)

    async def _cancel(self, request: Request) -> Response:
        def handle(params: dict[str, str], *_: Any) -> tuple[int, Any]:
            order = self._find(params)
            if not order.is_open:
                raise Refusal(404, "order_not_found", "주문을 찾지 못했습니다.")
            answer = order.to_json()  # as it stood when the request was taken: still "wait"
            self._close(order, "cancel")
            return 200, answer

        return await self._serve(request, "default", handle)

    async def _open_orders(self, request: Request) -> Response:
        return await self._serve(request, "default", self._listing(("wait", "watch")))

    async def _closed_orders(self, request: Request) -> Response:
        return await self._serve(request, "default", self._listing(("done", "cancel")))

    def _listing(self, allowed: tuple[str, ...]) -> Any:
        def handle(params: dict[str, str], query: tuple[tuple[str, str], ...], _: Any) -> tuple[int, Any]:
            states = [v for k, v in query if k in ("states[]", "state")] or list(allowed)
            if any(s not in allowed for s in states):
                raise Refusal(400, "validation_error", f"states must be among {allowed}.")
            market = params.get("market")
            found = [o for o in self.orders if o.state in states and (market is None or o.market == market)]
            if params.get("order_by", "desc") == "desc":
                found.reverse()
            limit = int(params.get("limit", "100"))
            page = int(params.get("page", "1"))
            return 200, [o.to_json() for o in found[(page - 1) * limit : page * limit]]

        return handle

    # -- the exchange --------------------------------------------------------------------------

    def _spec(self, market: str) -> MarketSpec:
        if market not in self.markets:
            raise Refusal(400, "market_does_not_exist", f"Market {market} does not exist.")
        return self.markets[market]

    def _find(self, params: dict[str, str]) -> FakeOrder:
        key_uuid, key_identifier = params.get("uuid"), params.get("identifier")
        if key_uuid is None and key_identifier is None:
            raise Refusal(400, "validation_error", "uuid or identifier is required.")
        for order in self.orders:
            if (key_uuid is not None and order.uuid == key_uuid) or (
                key_uuid is None and order.identifier == key_identifier
            ):
                return order
        raise Refusal(404, "order_not_found", "주문을 찾지 못했습니다.")

    @staticmethod
    def _account_json(currency: str, holding: Holding) -> dict[str, Any]:
        return {
            "currency": currency,
            "balance": _s(holding.balance),
            "locked": _s(holding.locked),
            "avg_buy_price": _s(holding.avg_buy_price),
            "avg_buy_price_modified": False,
            "unit_currency": "KRW",
        }

    def _new_order(self, body: dict[str, Any]) -> FakeOrder:
        identifier = body.get("identifier")
        if identifier is not None:
            identifier = str(identifier)
            if identifier in self._identifiers:
                raise Refusal(400, "duplicate_identifier", f"identifier {identifier} was used before.")
            self._identifiers.add(identifier)  # burnt even if the order is refused below
        market, side, ord_type = body.get("market"), body.get("side"), body.get("ord_type")
        if not isinstance(market, str) or side not in ("bid", "ask") or ord_type is None:
            raise Refusal(400, "validation_error", "market, side and ord_type are required.")
        spec = self._spec(market)
        quote, base = market.split("-", 1)
        price, volume = _decimal(body.get("price")), _decimal(body.get("volume"))
        tif = body.get("time_in_force")
        error = f"create_{side}_error"
        if ord_type == "best" or tif == "post_only":
            raise Refusal(400, "validation_error", "The fake exchange does not take best or post_only.")
        if tif not in (None, "ioc", "fok") or (tif is not None and ord_type != "limit"):
            raise Refusal(400, error, "time_in_force does not fit the order type.")
        if ord_type == "price":
            if side != "bid" or price is None or volume is not None:
                raise Refusal(400, error, "A market buy takes price (the amount) and no volume.")
        elif ord_type == "market":
            if side != "ask" or volume is None or price is not None:
                raise Refusal(400, error, "A market sell takes volume and no price.")
        elif ord_type == "limit":
            if price is None or volume is None:
                raise Refusal(400, "validation_error", "A limit order takes price and volume.")
            if price % spec.tick_size != 0:
                raise Refusal(
                    400, f"invalid_price_{side}", "주문가격 단위를 잘못 입력하셨습니다. 확인 후 시도해주세요."
                )
        else:
            raise Refusal(400, "validation_error", f"ord_type {ord_type} is unknown.")
        if (price is not None and price <= 0) or (volume is not None and volume <= 0):
            raise Refusal(400, error, "price and volume must be positive.")
        if volume is not None and volume != volume.quantize(UNIT, rounding=ROUND_DOWN):
            raise Refusal(400, error, "volume has more than 8 decimals.")

        if side == "bid":
            total = price if ord_type == "price" else price * volume  # type: ignore[operator]
            assert total is not None
            if total < spec.bid_min_total:
                raise Refusal(
                    400, "under_min_total_bid", f"최소주문금액 {spec.bid_min_total} 이상으로 주문해주세요"
                )
            if total > spec.max_total:
                raise Refusal(400, error, "The order total is above the maximum.")
            reserve = total + _fee(total, spec.bid_fee)
            wallet = self.holding(quote)
            if wallet.balance < reserve:
                raise Refusal(400, "insufficient_funds_bid", "매수가능 금액이 부족합니다.")
            wallet.balance -= reserve
            wallet.locked += reserve
            locked, reserved_fee = reserve, _fee(total, spec.bid_fee)
        else:
            assert volume is not None
            reference = price if ord_type == "limit" else (spec.bids[0].price if spec.bids else None)
            if reference is None or reference * volume < spec.ask_min_total:
                raise Refusal(
                    400, "under_min_total_ask", f"최소주문금액 {spec.ask_min_total} 이상으로 주문해주세요"
                )
            coin = self.holding(base)
            if coin.balance < volume:
                raise Refusal(400, "insufficient_funds_ask", "매도가능 잔고가 부족합니다.")
            coin.balance -= volume
            coin.locked += volume
            locked, reserved_fee = volume, ZERO

        order = FakeOrder(
            uuid=str(uuidlib.uuid4()),
            identifier=identifier,
            market=market,
            side=side,
            ord_type=ord_type,
            price=price,
            volume=volume,
            time_in_force=tif,
            created_at=datetime.now(KST).replace(microsecond=0),
            locked=locked,
            reserved_fee=reserved_fee,
        )
        self.orders.append(order)
        if ord_type == "price":
            self._match_market_buy(order, spec)
        elif ord_type == "market":
            self._match_market_sell(order, spec)
        else:
            self._match_limit(order, spec, maker=False)
        return order

    def _trade(self, order: FakeOrder, spec: MarketSpec, price: Decimal, volume: Decimal) -> None:
        quote, base = order.market.split("-", 1)
        funds = price * volume
        rate = spec.bid_fee if order.side == "bid" else spec.ask_fee
        fee = _fee(funds, rate)
        trade = FakeTrade(
            market=order.market,
            uuid=f"{next(_trade_ids):08d}-0000-4000-8000-000000000000",
            order_uuid=order.uuid,
            side=order.side,
            price=price,
            volume=volume,
            funds=funds,
            fee=fee,
            created_at=datetime.now(KST).replace(microsecond=0),
        )
        order.trades.append(trade)
        self.trades.append(trade)
        order.executed_volume += volume
        order.paid_fee += fee
        wallet, coin = self.holding(quote), self.holding(base)
        if order.side == "bid":
            # What the filled part had reserved (at the limit price, or what was spent for a market buy).
            reserved = funds + fee if order.ord_type == "price" else _bid_reserve(order.price, volume, rate)
            order.locked -= reserved
            wallet.locked -= reserved
            wallet.balance += reserved - funds - fee
            held = coin.balance + coin.locked
            coin.avg_buy_price = (coin.avg_buy_price * held + funds) / (held + volume)
            coin.balance += volume
        else:
            order.locked -= volume
            coin.locked -= volume
            wallet.balance += funds - fee

    def _close(self, order: FakeOrder, state: str) -> None:
        """End an order and hand back what it still holds."""
        quote, base = order.market.split("-", 1)
        holding = self.holding(quote if order.side == "bid" else base)
        holding.locked -= order.locked
        holding.balance += order.locked
        order.locked = ZERO
        order.state = state

    def _match_market_buy(self, order: FakeOrder, spec: MarketSpec) -> None:
        assert order.price is not None
        left = order.price
        for level in list(spec.asks):
            volume = min(level.size, (left / level.price).quantize(UNIT, rounding=ROUND_DOWN))
            if volume <= 0:
                break
            self._trade(order, spec, level.price, volume)
            left -= level.price * volume
            level.size -= volume
            if level.size == 0:
                spec.asks.remove(level)
        self._close(order, "done" if left == 0 else "cancel")

    def _match_market_sell(self, order: FakeOrder, spec: MarketSpec) -> None:
        assert order.volume is not None
        for level in list(spec.bids):
            left = order.volume - order.executed_volume
            if left <= 0:
                break
            volume = min(level.size, left)
            self._trade(order, spec, level.price, volume)
            level.size -= volume
            if level.size == 0:
                spec.bids.remove(level)
        self._close(order, "done" if order.executed_volume == order.volume else "cancel")

    def _match_limit(self, order: FakeOrder, spec: MarketSpec, *, maker: bool) -> None:
        assert order.price is not None and order.volume is not None
        book = spec.asks if order.side == "bid" else spec.bids
        crosses = [
            lv for lv in book if (lv.price <= order.price if order.side == "bid" else lv.price >= order.price)
        ]
        if order.time_in_force == "fok" and sum((lv.size for lv in crosses), ZERO) < order.volume:
            self._close(order, "cancel")
            return
        for level in crosses:
            left = order.volume - order.executed_volume
            if left <= 0:
                break
            volume = min(level.size, left)
            self._trade(order, spec, order.price if maker else level.price, volume)
            level.size -= volume
            if level.size == 0:
                book.remove(level)
        if order.executed_volume == order.volume:
            self._close(order, "done")
        elif order.time_in_force in ("ioc", "fok"):
            self._close(order, "cancel")


def _bid_reserve(price: Decimal | None, volume: Decimal, rate: Decimal) -> Decimal:
    assert price is not None
    total = price * volume
    return total + _fee(total, rate)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as e:
        raise Refusal(400, "validation_error", f"{value!r} is not a number.") from e


_NUMBER = "\x00number:"
_NUMBER_TEXT = re.compile(r'"\\u0000number:([0-9.eE+-]+)"')


def _json(payload: Any) -> bytes:
    """``payload`` as Starlette's JSONResponse writes it, a ``Decimal`` as an exact JSON number."""

    def number(value: Any) -> str:
        if isinstance(value, Decimal):
            return _NUMBER + format(value, "f")
        raise TypeError(f"{type(value).__name__} is not JSON")

    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=number)
    return _NUMBER_TEXT.sub(r"\1", text).encode("utf-8")


def _body_pairs(body: dict[str, Any]) -> list[tuple[str, str]]:
    """A JSON body's fields as the query string Upbit hashes: in order, arrays as ``key[]``."""
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        if value is None:
            continue
        if isinstance(value, list):
            name = key if key.endswith("[]") else f"{key}[]"
            pairs.extend((name, str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    return pairs
