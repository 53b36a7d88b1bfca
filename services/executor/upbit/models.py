"""Typed answers of Upbit's exchange API, parsed from its real JSON field names (pure).

Upbit sends numbers as strings (``"price": "3214215.0"``); every amount here is a ``Decimal``.
A field Upbit leaves ``null`` for an order type (``volume`` of a market buy, ``price`` of a market
sell) is ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar

from services.executor.upbit.errors import MalformedAnswer

ZERO = Decimal(0)
E = TypeVar("E", bound=StrEnum)


class Side(StrEnum):
    BID = "bid"  # buy
    ASK = "ask"  # sell


class OrdType(StrEnum):
    LIMIT = "limit"
    PRICE = "price"  # market buy for a KRW amount (``price`` = the amount)
    MARKET = "market"  # market sell of a volume
    BEST = "best"  # best price, needs time_in_force ioc/fok


class OrderState(StrEnum):
    WAIT = "wait"  # open on the book
    WATCH = "watch"  # a reserved (stop) order waiting for its trigger
    DONE = "done"
    CANCEL = "cancel"  # cancelled, possibly after partial fills (a market buy often ends here)


OPEN_STATES = (OrderState.WAIT, OrderState.WATCH)
CLOSED_STATES = (OrderState.DONE, OrderState.CANCEL)


class TimeInForce(StrEnum):
    IOC = "ioc"
    FOK = "fok"
    POST_ONLY = "post_only"


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution of an order (``trades[]`` of ``GET /v1/order``)."""

    market: str
    uuid: str
    price: Decimal
    volume: Decimal
    funds: Decimal
    side: Side
    created_at: datetime | None = None
    trend: str | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """An order as Upbit reports it. Listings and the cancel answer carry no ``trades``."""

    uuid: str
    identifier: str | None
    market: str
    side: Side
    ord_type: OrdType
    state: OrderState
    price: Decimal | None
    volume: Decimal | None
    remaining_volume: Decimal | None
    executed_volume: Decimal
    paid_fee: Decimal
    reserved_fee: Decimal
    remaining_fee: Decimal
    locked: Decimal
    trades_count: int
    created_at: datetime
    time_in_force: TimeInForce | None = None
    trades: tuple[Trade, ...] = ()
    reported_executed_funds: Decimal | None = None
    """Upbit's own ``executed_funds`` (newer answers carry it, listings included), if present."""

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def executed_funds(self) -> Decimal:
        """Quote currency traded: the trades' ``funds`` summed, else Upbit's ``executed_funds``, else 0."""
        if self.trades:
            return sum((t.funds for t in self.trades), ZERO)
        return self.reported_executed_funds if self.reported_executed_funds is not None else ZERO


@dataclass(frozen=True, slots=True)
class Account:
    """One currency's balance (``GET /v1/accounts``); ``locked`` is held by open orders."""

    currency: str
    balance: Decimal
    locked: Decimal
    avg_buy_price: Decimal
    avg_buy_price_modified: bool
    unit_currency: str


@dataclass(frozen=True, slots=True)
class Chance:
    """What an order on ``market`` may be (``GET /v1/orders/chance``): fees, minimum totals, balances."""

    market: str
    bid_fee: Decimal
    ask_fee: Decimal
    maker_bid_fee: Decimal
    maker_ask_fee: Decimal
    bid_currency: str
    ask_currency: str
    bid_min_total: Decimal
    ask_min_total: Decimal
    max_total: Decimal | None
    order_types: tuple[str, ...]
    state: str | None
    bid_account: Account
    ask_account: Account


@dataclass(frozen=True, slots=True)
class Instrument:
    """A market's price grid (``GET /v1/orderbook/instruments``)."""

    market: str
    quote_currency: str
    tick_size: Decimal
    supported_levels: tuple[Decimal, ...]


def is_on_tick(price: Decimal, tick_size: Decimal) -> bool:
    """True when ``price`` is a positive whole multiple of ``tick_size`` (exact, in Decimal)."""
    return price > 0 and tick_size > 0 and price % tick_size == 0


def to_wire(value: Decimal) -> str:
    """A Decimal as Upbit takes it: plain digits, no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


# -- parsing ---------------------------------------------------------------------------------------


def _dec(raw: Mapping[str, Any], key: str) -> Decimal:
    value = _opt_dec(raw, key)
    if value is None:
        raise MalformedAnswer("malformed_answer", f"field {key!r} is missing or null")
    return value


def _opt_dec(raw: Mapping[str, Any], key: str) -> Decimal | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as e:
        raise MalformedAnswer("malformed_answer", f"field {key!r} is not a number: {value!r}") from e


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise MalformedAnswer("malformed_answer", f"field {key!r} is missing or not a string")
    return value


def _time(raw: Mapping[str, Any], key: str) -> datetime:
    try:
        value = datetime.fromisoformat(_str(raw, key))
    except ValueError as e:
        raise MalformedAnswer("malformed_answer", f"field {key!r} is not a timestamp") from e
    if value.tzinfo is None:
        raise MalformedAnswer("malformed_answer", f"field {key!r} has no UTC offset")
    return value


def _enum(kind: type[E], raw: Mapping[str, Any], key: str) -> E:
    try:
        return kind(_str(raw, key))
    except ValueError as e:
        raise MalformedAnswer("malformed_answer", f"field {key!r} = {raw.get(key)!r} is unknown") from e


def parse_trade(raw: Mapping[str, Any]) -> Trade:
    return Trade(
        market=_str(raw, "market"),
        uuid=_str(raw, "uuid"),
        price=_dec(raw, "price"),
        volume=_dec(raw, "volume"),
        funds=_dec(raw, "funds"),
        side=_enum(Side, raw, "side"),
        created_at=_time(raw, "created_at") if raw.get("created_at") is not None else None,
        trend=raw.get("trend"),
    )


def parse_order(raw: Any) -> Order:
    if not isinstance(raw, Mapping):
        raise MalformedAnswer("malformed_answer", f"an order is an object, got {type(raw).__name__}")
    tif = raw.get("time_in_force")
    trades = raw.get("trades") or ()
    if not isinstance(trades, Sequence):
        raise MalformedAnswer("malformed_answer", "field 'trades' is not a list")
    return Order(
        uuid=_str(raw, "uuid"),
        identifier=raw.get("identifier"),
        market=_str(raw, "market"),
        side=_enum(Side, raw, "side"),
        ord_type=_enum(OrdType, raw, "ord_type"),
        state=_enum(OrderState, raw, "state"),
        price=_opt_dec(raw, "price"),
        volume=_opt_dec(raw, "volume"),
        remaining_volume=_opt_dec(raw, "remaining_volume"),
        executed_volume=_dec(raw, "executed_volume"),
        paid_fee=_dec(raw, "paid_fee"),
        reserved_fee=_opt_dec(raw, "reserved_fee") or ZERO,
        remaining_fee=_opt_dec(raw, "remaining_fee") or ZERO,
        locked=_opt_dec(raw, "locked") or ZERO,
        trades_count=int(raw.get("trades_count") or 0),
        created_at=_time(raw, "created_at"),
        time_in_force=TimeInForce(tif) if tif else None,
        trades=tuple(parse_trade(t) for t in trades),
        reported_executed_funds=_opt_dec(raw, "executed_funds"),
    )


def parse_orders(raw: Any) -> tuple[Order, ...]:
    if not isinstance(raw, list):
        raise MalformedAnswer("malformed_answer", "an order listing is a list")
    return tuple(parse_order(o) for o in raw)


def parse_account(raw: Mapping[str, Any]) -> Account:
    return Account(
        currency=_str(raw, "currency"),
        balance=_dec(raw, "balance"),
        locked=_dec(raw, "locked"),
        avg_buy_price=_opt_dec(raw, "avg_buy_price") or ZERO,
        avg_buy_price_modified=bool(raw.get("avg_buy_price_modified", False)),
        unit_currency=str(raw.get("unit_currency") or "KRW"),
    )


def parse_accounts(raw: Any) -> tuple[Account, ...]:
    if not isinstance(raw, list):
        raise MalformedAnswer("malformed_answer", "accounts is a list")
    return tuple(parse_account(a) for a in raw)


def parse_chance(raw: Any) -> Chance:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("market"), Mapping):
        raise MalformedAnswer("malformed_answer", "orders/chance has no market object")
    market = raw["market"]
    bid, ask = market.get("bid") or {}, market.get("ask") or {}
    return Chance(
        market=_str(market, "id"),
        bid_fee=_dec(raw, "bid_fee"),
        ask_fee=_dec(raw, "ask_fee"),
        maker_bid_fee=_opt_dec(raw, "maker_bid_fee") or _dec(raw, "bid_fee"),
        maker_ask_fee=_opt_dec(raw, "maker_ask_fee") or _dec(raw, "ask_fee"),
        bid_currency=_str(bid, "currency"),
        ask_currency=_str(ask, "currency"),
        bid_min_total=_dec(bid, "min_total"),
        ask_min_total=_dec(ask, "min_total"),
        max_total=_opt_dec(market, "max_total"),
        order_types=tuple(market.get("order_types") or ()),
        state=market.get("state"),
        bid_account=parse_account(raw.get("bid_account") or {}),
        ask_account=parse_account(raw.get("ask_account") or {}),
    )


def parse_instruments(raw: Any) -> dict[str, Instrument]:
    if not isinstance(raw, list):
        raise MalformedAnswer("malformed_answer", "orderbook/instruments is a list")
    out: dict[str, Instrument] = {}
    for item in raw:
        levels = item.get("supported_levels") or ()
        out[_str(item, "market")] = Instrument(
            market=_str(item, "market"),
            quote_currency=_str(item, "quote_currency"),
            tick_size=_dec(item, "tick_size"),
            supported_levels=tuple(Decimal(str(v)) for v in levels),
        )
    return out


@dataclass(frozen=True, slots=True)
class BookLevel:
    """One price level of one side of an order book: ``size`` base units offered at ``price``."""

    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class Orderbook:
    """A market's order book as ``GET /v1/orderbook`` shows it: its first levels only (Upbit shows
    up to 30 pairs), asks best (lowest) first, bids best (highest) first. A level of size 0 (a side
    shorter than the other) is left out."""

    market: str
    timestamp_ms: int
    asks: tuple[BookLevel, ...]
    bids: tuple[BookLevel, ...]
    total_ask_size: Decimal
    total_bid_size: Decimal


def parse_orderbooks(raw: Any) -> dict[str, Orderbook]:
    """``GET /v1/orderbook``: a list of ``{market, timestamp, total_ask_size, total_bid_size,
    orderbook_units: [{ask_price, bid_price, ask_size, bid_size}]}``. Upbit sends these numbers as
    JSON numbers, not strings: the client reads them as ``Decimal`` from the text, never as floats."""
    if not isinstance(raw, list):
        raise MalformedAnswer("malformed_answer", "orderbook is a list")
    out: dict[str, Orderbook] = {}
    for item in raw:
        if not isinstance(item, Mapping):
            raise MalformedAnswer("malformed_answer", "an orderbook is an object")
        units = item.get("orderbook_units")
        if not isinstance(units, Sequence) or isinstance(units, str):
            raise MalformedAnswer("malformed_answer", "field 'orderbook_units' is not a list")
        asks: list[BookLevel] = []
        bids: list[BookLevel] = []
        for unit in units:
            if not isinstance(unit, Mapping):
                raise MalformedAnswer("malformed_answer", "an orderbook unit is an object")
            for levels, prefix in ((asks, "ask"), (bids, "bid")):
                level = BookLevel(_dec(unit, f"{prefix}_price"), _dec(unit, f"{prefix}_size"))
                if level.price > 0 and level.size > 0:
                    levels.append(level)
        timestamp = item.get("timestamp")
        if not isinstance(timestamp, int | Decimal):
            raise MalformedAnswer("malformed_answer", "field 'timestamp' is not a number")
        market = _str(item, "market")
        out[market] = Orderbook(
            market=market,
            timestamp_ms=int(timestamp),
            asks=tuple(sorted(asks, key=lambda lv: lv.price)),
            bids=tuple(sorted(bids, key=lambda lv: lv.price, reverse=True)),
            total_ask_size=_opt_dec(item, "total_ask_size") or ZERO,
            total_bid_size=_opt_dec(item, "total_bid_size") or ZERO,
        )
    return out
