"""The collector's pure decisions: Upbit payload -> candles, which candles are closed and new,
where a backfill starts, how many candles a poll asks for, when a backfill page is the last and
where a taken symbol's polling resumes.

No I/O and no clock: "now" is always an argument (the edge reads it through its clock seam).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from coinpilot.contracts import MinuteCandle
from coinpilot.errors import ContractError, PermanentError
from coinpilot.market_checks import check_shape

ONE_MINUTE = timedelta(minutes=1)
MAX_COUNT = 200
"""Upbit's maximum ``count`` per candle request."""
HISTORY_TOLERANCE = timedelta(hours=1)
"""Stored history starting this close to ``now - lookback`` counts as covering the lookback (minutes
without trades have no candle, so the first stored one is rarely exactly at the boundary)."""
POLL_MIN_COUNT = 3
"""A poll asks for at least 3 candles: the forming one and the two before it."""
REQUIRED_FIELDS = (
    "market",
    "candle_date_time_utc",
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "candle_acc_trade_volume",
)
PRICE_FIELDS = ("opening_price", "high_price", "low_price", "trade_price", "candle_acc_trade_volume")
UTC_FORMAT = "%Y-%m-%dT%H:%M:%S"


def decode_json(body: bytes) -> Any:
    """JSON with every non-integer number as an exact ``Decimal`` (the text Upbit sent, no float)."""
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(f"malformed Upbit payload: not JSON ({exc})") from exc


def _number(element: dict[str, Any], key: str) -> Decimal:
    value = element[key]
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise PermanentError(f"malformed Upbit candle: {key} is {value!r}, not a number")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise PermanentError(f"malformed Upbit candle: {key} is not finite")
    return number


def parse_start(text: object) -> datetime:
    """``candle_date_time_utc`` (``yyyy-MM-ddTHH:mm:ss``, UTC, a whole minute) as an aware datetime."""
    if not isinstance(text, str):
        raise PermanentError(f"malformed Upbit candle: candle_date_time_utc is {text!r}")
    try:
        start = datetime.strptime(text, UTC_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise PermanentError(f"malformed Upbit candle: candle_date_time_utc {text!r}") from exc
    if start.second:
        raise PermanentError(f"malformed Upbit candle: {text!r} is not a minute start")
    return start


def parse_candle(element: object, market: str) -> MinuteCandle:
    """One element of ``GET /v1/candles/minutes/1`` as a candle (BEHAVIOUR §1.2, §13.3 N).

    ``market -> symbol``, ``opening/high/low/trade_price -> open/high/low/close``,
    ``candle_acc_trade_volume -> volume`` (base coin), ``candle_date_time_utc -> ts_open``.
    The KST time, last-trade ``timestamp``, KRW turnover and ``unit`` are not used.
    """
    if not isinstance(element, dict):
        raise PermanentError(f"malformed Upbit candle: {type(element).__name__}, not an object")
    absent = [k for k in REQUIRED_FIELDS if k not in element]
    if absent:
        raise PermanentError(f"malformed Upbit candle: missing {', '.join(absent)}")
    if element["market"] != market:
        raise PermanentError(f"Upbit answered market {element['market']!r} to a request for {market!r}")
    if element.get("unit", 1) != 1:
        raise PermanentError(f"Upbit answered unit {element['unit']!r} to a 1-minute request")
    start = parse_start(element["candle_date_time_utc"])
    o, h, lo, c, v = (_number(element, k) for k in PRICE_FIELDS)
    try:
        candle = MinuteCandle(
            symbol=market,
            ts_open=start,
            ts_event=start + ONE_MINUTE,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=v,
        )
    except (ContractError, ValueError) as exc:
        raise PermanentError(f"malformed Upbit candle at {element['candle_date_time_utc']}: {exc}") from exc
    refusal = check_shape(candle)  # zero or negative prices: the contract allows them, a market does not
    if refusal is not None:
        at = element["candle_date_time_utc"]
        raise PermanentError(f"implausible Upbit candle at {at}: {refusal.rule}: {refusal.message}")
    return candle


def parse_candles(payload: object, market: str) -> list[MinuteCandle]:
    """The whole response (a JSON array, newest first) as candles, oldest first, one per minute."""
    if not isinstance(payload, list):
        raise PermanentError(f"malformed Upbit payload: {type(payload).__name__}, not an array")
    candles = sorted((parse_candle(e, market) for e in payload), key=lambda c: c.ts_open)
    for a, b in pairwise(candles):
        if a.ts_open == b.ts_open:
            raise PermanentError(f"malformed Upbit payload: two candles for {a.ts_open:%Y-%m-%dT%H:%M}")
    return candles


def is_closed(candle: MinuteCandle, now: datetime) -> bool:
    """A candle is closed once its minute is over: ``start + 60 s <= now`` (§1.5 Rebuild)."""
    return candle.ts_event <= now


def closed_after(
    candles: Iterable[MinuteCandle], now: datetime, after: datetime | None
) -> list[MinuteCandle]:
    """Closed candles opened strictly after ``after``, in time order: what a poll may publish."""
    return sorted(
        (c for c in candles if is_closed(c, now) and (after is None or c.ts_open > after)),
        key=lambda c: c.ts_open,
    )


def poll_count(now: datetime, last: datetime | None) -> int:
    """Candles a poll asks for: the forming one plus every minute since ``last``, 3 to 200."""
    if last is None:
        return POLL_MIN_COUNT
    minutes = math.floor((now - last) / ONE_MINUTE) + 1
    return max(POLL_MIN_COUNT, min(MAX_COUNT, minutes))


@dataclass(frozen=True, slots=True)
class StoredRange:
    """Open times of the oldest and newest stored 1m candle of a symbol (None when there is none)."""

    first: datetime | None = None
    last: datetime | None = None


def backfill_start(stored: StoredRange, now: datetime, lookback: timedelta) -> datetime:
    """Backfill fetches candles opened strictly after the returned time, up to ``now``.

    History shorter than ``lookback`` (its first candle later than ``now - lookback`` by more
    than ``HISTORY_TOLERANCE``, or no history) -> ``now - lookback``: the whole lookback is fetched
    and upserted, which also repairs gaps inside it. Otherwise -> the newest stored candle, so
    only what came after it is fetched; after a downtime longer than ``lookback`` the older part
    of the hole is left alone (§1.4 and the §1.5 first-start Rebuild).
    """
    floor = now - lookback
    if stored.first is None or stored.last is None or stored.first > floor + HISTORY_TOLERANCE:
        return floor
    return max(stored.last, floor)


RESUME_WINDOW = timedelta(minutes=60)
"""How far back a taken symbol's polling may resume: inside Upbit's 200-minute poll window and
well inside the streams' 2-hour duplicate window, so a minute published again is dropped."""


@dataclass(frozen=True, slots=True)
class Take:
    """What taking a symbol (its partition moved to this replica) does: backfill the candles
    opened after ``start`` and closed by ``until`` (no backfill when ``start`` is None), then poll
    after ``resume`` (None: after the newest stored once the backfill is done)."""

    start: datetime | None
    until: datetime
    resume: datetime | None


def take_plan(stored: StoredRange, now: datetime, lookback: timedelta) -> Take:
    """The backfill of a start-up (``backfill_start``), except after a recent newest candle.

    When the newest stored candle is at most ``RESUME_WINDOW`` old (a takeover, a rebalance, a
    restart), polling resumes right after it, so the minutes nobody polled meanwhile are
    published, in order, not only stored (the recorder stores them; JetStream drops those the
    previous owner had published, by their ``Nats-Msg-Id``), and the backfill stores only what
    is older (a short history's lookback). Nothing after the resume point is ever stored without
    being published, so the next owner, resuming after the newest stored, skips nothing even
    when this one loses the symbol before its first poll. Older (or none): as at start-up, the
    hole is stored only and polling resumes after it.
    """
    start = backfill_start(stored, now, lookback)
    last = stored.last
    if last is not None and now - last <= RESUME_WINDOW:
        return Take(start if start < last else None, last + ONE_MINUTE, last)
    return Take(start, now, None)


@dataclass(frozen=True, slots=True)
class Page:
    """One backfill page's outcome: what to keep, and where the next page ends (or None: done)."""

    keep: tuple[MinuteCandle, ...]
    next_to: datetime | None


def page_outcome(candles: Sequence[MinuteCandle], requested: int, *, start: datetime, now: datetime) -> Page:
    """Keep the closed candles opened after ``start``; continue before the oldest one unless the
    page was empty or short (the start of the market's history) or already reached ``start``."""
    keep = tuple(c for c in candles if c.ts_open > start and is_closed(c, now))
    if not candles:
        return Page(keep, None)
    oldest = min(c.ts_open for c in candles)
    done = len(candles) < requested or oldest <= start
    return Page(keep, None if done else oldest)


def format_to(ts: datetime) -> str:
    """The ``to`` query parameter: ``yyyy-MM-ddTHH:mm:ssZ`` (exclusive upper bound, UTC)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
