"""The §5.5 guardrail keys as values on EVENT time: Redis strings <-> :class:`GuardBook` (pure).

``state.GuardStore`` reads the keys of one (run, symbol, event time) into a ``GuardBook``, calls
the same :func:`services.agent.guard_state.admit` / ``after_decision`` the backtest calls, and writes
back what changed, so there is one rule implementation. Key names stay those of §5.5; the expiry
lives in the value as an instant of market time, compared with the order's ``ts_event``:

* ``ai:guard:global:block``: ``"<low_credit|error_streak>|<until>"``
* ``ai:guard:symbol:<SYM>:cooldown``: ``"<minutes>|<until>"``
* ``ai:guard:symbol:<SYM>:reject_count``: ``"<count>|<until>"``
* ``ai:guard:error_streak``: ``"<count>|<until>"``
* ``ai:usage:hour:<YYYYMMDDHH>``, ``ai:usage:day:<YYYYMMDD>``: ``"<count>"`` (INCR, event-time buckets)

``<until>`` is ``datetime.isoformat()`` of a UTC instant (microseconds kept). The Redis TTL of a
written key only collects garbage: the event-time duration left, rounded up, plus
:data:`GC_MARGIN_SECONDS`. A bare value without ``|`` (written by the original, whose expiry was
the Redis TTL) is read as expiring ``now`` + its remaining TTL; without a TTL it is inactive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from coinpilot.cache import keys
from coinpilot.clock import ensure_utc
from services.agent.guard_rules import GlobalBlock, day_bucket, hour_bucket
from services.agent.guard_state import GuardBook, Window

SEP = "|"
GC_MARGIN_SECONDS = 3600
"""Kept past the event-time expiry, so a replay paced slower than the market still finds its keys."""


class GuardValueError(ValueError):
    """A guardrail key holds something this module did not write: treated like a Redis error."""


@dataclass(frozen=True, slots=True)
class GuardKeys:
    """The keys one decision reads and writes: the run's global keys, the symbol's, the event-time buckets."""

    global_block: str
    cooldown: str
    reject_count: str
    error_streak: str
    usage_hour: str
    usage_day: str

    @classmethod
    def of(cls, run_id: str, symbol: str, now: datetime) -> GuardKeys:
        return cls(
            global_block=keys.ai_global_block(run_id),
            cooldown=keys.ai_symbol_cooldown(symbol, run_id),
            reject_count=keys.ai_symbol_reject_count(symbol, run_id),
            error_streak=keys.ai_error_streak(run_id),
            usage_hour=keys.ai_usage_hour(hour_bucket(now), run_id),
            usage_day=keys.ai_usage_day(day_bucket(now), run_id),
        )

    @property
    def stamped(self) -> tuple[str, str, str, str]:
        """The keys whose value carries an expiry (``<head>|<until>``)."""
        return (self.global_block, self.cooldown, self.reject_count, self.error_streak)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.stamped, self.usage_hour, self.usage_day)


@dataclass(frozen=True, slots=True)
class Stamped:
    head: str
    until: datetime | None


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def is_legacy(raw: bytes | str | None) -> bool:
    """A bare value (the original's format): its expiry is its Redis TTL."""
    return raw is not None and SEP not in _text(raw)


def encode(head: object, until: datetime) -> str:
    return f"{head}{SEP}{ensure_utc(until).isoformat()}"


def decode(raw: bytes | str | None, now: datetime, legacy_ttl_ms: int | None = None) -> Stamped | None:
    """``None`` for a missing key; a bare value expires ``now`` + ``legacy_ttl_ms`` (none: inactive)."""
    if raw is None:
        return None
    text = _text(raw)
    head, sep, until = text.partition(SEP)
    if not sep:
        if legacy_ttl_ms is None or legacy_ttl_ms <= 0:
            return Stamped(text, None)
        return Stamped(text, now + timedelta(milliseconds=legacy_ttl_ms))
    try:
        return Stamped(head, ensure_utc(datetime.fromisoformat(until)))
    except ValueError as exc:
        raise GuardValueError(f"unreadable guardrail value {text!r}") from exc


def _count(stamped: Stamped) -> int:
    try:
        return int(stamped.head)
    except ValueError as exc:
        raise GuardValueError(f"unreadable guardrail counter {stamped.head!r}") from exc


def _window(stamped: Stamped | None) -> Window:
    return Window() if stamped is None else Window(_count(stamped), stamped.until)


def book_of(
    symbol: str,
    now: datetime,
    *,
    global_block: Stamped | None,
    cooldown: Stamped | None,
    reject_count: Stamped | None,
    error_streak: Stamped | None,
    hour_calls: int,
    day_calls: int,
) -> GuardBook:
    """The part of the run's :class:`GuardBook` that a decision on ``symbol`` at ``now`` reads."""
    kind: GlobalBlock | None = None
    if global_block is not None:
        try:
            kind = GlobalBlock(global_block.head)
        except ValueError as exc:
            raise GuardValueError(f"unknown global block {global_block.head!r}") from exc
    cooldown_until: dict[str, datetime] = {}
    if cooldown is not None and cooldown.until is not None:
        cooldown_until[symbol] = cooldown.until
    return GuardBook(
        global_block=kind,
        global_until=global_block.until if global_block is not None else None,
        cooldown_until=cooldown_until,
        rejects={symbol: _window(reject_count)} if reject_count is not None else {},
        error_streak=_window(error_streak),
        hour_calls={hour_bucket(now): hour_calls},
        day_calls={day_bucket(now): day_calls},
    )


@dataclass(frozen=True, slots=True)
class Put:
    """SET ``key`` to ``value`` with a garbage-collection TTL."""

    key: str
    value: str
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Add:
    """INCRBY ``key`` ``by``, then EXPIRE (the usage counters)."""

    key: str
    by: int
    ttl_seconds: int


Write = Put | Delete | Add


def gc_ttl_seconds(until: datetime, now: datetime) -> int:
    """The event-time duration left, rounded up, plus :data:`GC_MARGIN_SECONDS`."""
    return max(1, math.ceil((until - now).total_seconds())) + GC_MARGIN_SECONDS


def _stamp(key: str, head: object, until: datetime | None, now: datetime) -> Write:
    if until is None:
        return Delete(key)
    return Put(key, encode(head, until), gc_ttl_seconds(until, now))


def writes(
    k: GuardKeys, symbol: str, now: datetime, before: GuardBook, after: GuardBook
) -> tuple[Write, ...]:
    """What to write so the keys hold ``after`` (a book read with :func:`book_of`)."""
    out: list[Write] = []
    if (after.global_block, after.global_until) != (before.global_block, before.global_until):
        kind = after.global_block
        out.append(_stamp(k.global_block, kind, after.global_until if kind is not None else None, now))
    cooldown = after.cooldown_until.get(symbol)
    if cooldown != before.cooldown_until.get(symbol):
        minutes = int((cooldown - now).total_seconds()) // 60 if cooldown is not None else 0
        out.append(_stamp(k.cooldown, minutes, cooldown, now))
    rejects = after.rejects.get(symbol, Window())
    if rejects != before.rejects.get(symbol, Window()):
        out.append(_stamp(k.reject_count, rejects.count, rejects.until, now))
    if after.error_streak != before.error_streak:
        out.append(_stamp(k.error_streak, after.error_streak.count, after.error_streak.until, now))
    for key, bucket, ttl, old, new in (
        (k.usage_hour, hour_bucket(now), keys.AI_USAGE_HOUR_TTL_SECONDS, before.hour_calls, after.hour_calls),
        (k.usage_day, day_bucket(now), keys.AI_USAGE_DAY_TTL_SECONDS, before.day_calls, after.day_calls),
    ):
        by = new.get(bucket, 0) - old.get(bucket, 0)
        if by:
            out.append(Add(key, by, ttl))
    return tuple(out)


def seconds_left(until: datetime | None, now: datetime) -> int:
    """A TTL-like reading of an event-time expiry: -2 when nothing is active (Redis' 'missing')."""
    if until is None or until <= now:
        return -2
    return max(1, int((until - now).total_seconds()))


def gauge_reading(book: GuardBook, now: datetime) -> tuple[int, int, int]:
    """``(global block seconds left, error streak, streak seconds left)`` as the gauges take them."""
    streak = book.error_streak
    return seconds_left(book.global_until, now), streak.current(now), seconds_left(streak.until, now)
