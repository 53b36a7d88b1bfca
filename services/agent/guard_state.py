"""The guardrails' state on EVENT time, as a pure value (BEHAVIOUR §5.5 rules, §12 rebuild).

Every expiry is an instant of market time (``until``), compared with the order's ``ts_event``,
so a cooldown of 5 minutes is 5 minutes of candles whether the pipeline runs live, replays at
1000x or backtests in one process. The rules themselves (the 5/10/15 ladder, the caps, the
global blocks) are :mod:`services.agent.guard_rules`; this module only keeps their clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType

from coinpilot.cache.keys import AI_ERROR_STREAK_TTL_SECONDS, guard_ttl_seconds
from services.agent.guard_rules import (
    Block,
    ErrorKind,
    GlobalBlock,
    GuardParams,
    GuardReading,
    StreakAction,
    check_block,
    cooldown_minutes,
    day_bucket,
    hour_bucket,
    streak_action,
    streak_blocks,
)

EMPTY: Mapping[str, object] = MappingProxyType({})


def _seconds_left(until: datetime | None, now: datetime) -> int:
    """A TTL-like reading: seconds left, or -2 when nothing is active (Redis' 'missing')."""
    if until is None or until <= now:
        return -2
    return max(1, int((until - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class Window:
    """A counter that forgets itself ``until`` (refreshed on every increment: a sliding window)."""

    count: int = 0
    until: datetime | None = None

    def current(self, now: datetime) -> int:
        return self.count if self.until is not None and self.until > now else 0

    def bumped(self, now: datetime, ttl: timedelta) -> Window:
        return Window(self.current(now) + 1, now + ttl)


@dataclass(frozen=True, slots=True)
class GuardBook:
    global_block: GlobalBlock | None = None
    global_until: datetime | None = None
    cooldown_until: Mapping[str, datetime] = field(default_factory=lambda: EMPTY)  # type: ignore[arg-type]
    rejects: Mapping[str, Window] = field(default_factory=lambda: EMPTY)  # type: ignore[arg-type]
    error_streak: Window = field(default_factory=Window)
    hour_calls: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # type: ignore[arg-type]
    day_calls: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # type: ignore[arg-type]

    def reading(self, symbol: str, now: datetime) -> GuardReading:
        return GuardReading(
            global_block_ttl=_seconds_left(self.global_until, now),
            cooldown_ttl=_seconds_left(self.cooldown_until.get(symbol), now),
            hour_calls=self.hour_calls.get(hour_bucket(now), 0),
            day_calls=self.day_calls.get(day_bucket(now), 0),
        )


def admit(book: GuardBook, symbol: str, now: datetime, params: GuardParams) -> tuple[GuardBook, Block | None]:
    """The pre-call check, then the call accounting (before the call: failures spend budget)."""
    block = check_block(book.reading(symbol, now), params)
    if block is not None:
        return book, block
    hour, day = hour_bucket(now), day_bucket(now)
    return (
        replace(
            book,
            hour_calls={hour: book.hour_calls.get(hour, 0) + 1},  # older hours can no longer matter
            day_calls={day: book.day_calls.get(day, 0) + 1},
        ),
        None,
    )


def after_decision(
    book: GuardBook,
    symbol: str,
    now: datetime,
    approved: bool,
    error_kind: ErrorKind | None,
    params: GuardParams,
) -> GuardBook:
    """§5.5 post-decision update: approval clears; every rejection climbs the cooldown ladder."""
    if approved:
        rejects = {s: w for s, w in book.rejects.items() if s != symbol}
        return replace(book, rejects=rejects, error_streak=Window())
    window = book.rejects.get(symbol, Window()).bumped(now, timedelta(seconds=params.window_ttl_seconds))
    minutes = cooldown_minutes(window.count, params)
    book = replace(
        book,
        rejects={**book.rejects, symbol: window},
        cooldown_until={**book.cooldown_until, symbol: now + timedelta(seconds=guard_ttl_seconds(minutes))},
    )
    action = streak_action(error_kind)
    if action is StreakAction.BLOCK_LOW_CREDIT:
        return replace(
            book,
            global_block=GlobalBlock.LOW_CREDIT,
            global_until=now + timedelta(seconds=params.credit_block_ttl_seconds),
        )
    if action is StreakAction.COUNT_ERROR:
        streak = book.error_streak.bumped(now, timedelta(seconds=AI_ERROR_STREAK_TTL_SECONDS))
        book = replace(book, error_streak=streak)
        if streak_blocks(streak.count, params):
            return replace(
                book,
                global_block=GlobalBlock.ERROR_STREAK,
                global_until=now + timedelta(seconds=params.error_block_ttl_seconds),
            )
        return book
    return replace(book, error_streak=Window())
