"""Guardrail rules (BEHAVIOUR §5.5) as pure functions over what was read from Redis.

``state.GuardStore`` reads and writes the keys; everything decided about them is here, so the
ladders, caps and block rules are testable without Redis. Errors are told apart by a structured
:class:`ErrorKind` (rebuild of the substring matching the original did on reasoning text).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from coinpilot.cache.keys import guard_ttl_seconds
from coinpilot.clock import ensure_utc


class ErrorKind(StrEnum):
    """Why a model call produced no usable answer."""

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    CONNECTION = "connection"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    LOW_CREDIT = "low_credit"
    INVALID_OUTPUT = "invalid_output"
    RECORD_MISSING = "record_missing"
    INTERNAL = "internal"


#: Kinds that mean "the AI service is failing": they build the error streak (the original let
#: timeouts reset it, §5.5 [BUG]). A malformed answer is the model's fault, not an outage.
STREAK_KINDS = frozenset(
    {
        ErrorKind.TIMEOUT,
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECTION,
        ErrorKind.AUTH,
        ErrorKind.BAD_REQUEST,
    }
)


class GlobalBlock(StrEnum):
    LOW_CREDIT = "low_credit"
    ERROR_STREAK = "error_streak"


class BlockReason(StrEnum):
    GLOBAL_BLOCK = "GLOBAL_BLOCK"
    SYMBOL_COOLDOWN = "SYMBOL_COOLDOWN"
    HOURLY_BUDGET = "HOURLY_BUDGET"
    DAILY_BUDGET = "DAILY_BUDGET"
    GUARD_UNAVAILABLE = "GUARD_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class GuardParams:
    """From the regime entry block; minutes as configured, TTLs derived as §5.5 says."""

    cooldown_minutes_1: int = 5
    cooldown_minutes_2: int = 10
    cooldown_minutes_3: int = 15
    cooldown_window_minutes: int = 30
    max_calls_per_hour: int = 20
    max_calls_per_day: int = 120
    credit_block_minutes: int = 60
    error_streak_threshold: int = 5
    error_block_minutes: int = 30

    @property
    def window_ttl_seconds(self) -> int:
        return guard_ttl_seconds(self.cooldown_window_minutes)

    @property
    def credit_block_ttl_seconds(self) -> int:
        return guard_ttl_seconds(self.credit_block_minutes)

    @property
    def error_block_ttl_seconds(self) -> int:
        return guard_ttl_seconds(self.error_block_minutes)


@dataclass(frozen=True, slots=True)
class GuardReading:
    """What the pre-call check read. TTLs are Redis TTL replies (-2 missing, -1 no expiry)."""

    global_block_ttl: int = -2
    cooldown_ttl: int = -2
    hour_calls: int = 0
    day_calls: int = 0


@dataclass(frozen=True, slots=True)
class Block:
    reason: BlockReason
    message: str


def check_block(reading: GuardReading, params: GuardParams) -> Block | None:
    """The pre-call check (``should_block``), in the original order."""
    if reading.global_block_ttl > 0:
        return Block(BlockReason.GLOBAL_BLOCK, f"Global AI block active ({reading.global_block_ttl}s left)")
    if reading.cooldown_ttl > 0:
        return Block(BlockReason.SYMBOL_COOLDOWN, f"Symbol AI cooldown active ({reading.cooldown_ttl}s left)")
    if reading.hour_calls >= params.max_calls_per_hour:
        return Block(
            BlockReason.HOURLY_BUDGET,
            f"Hourly AI budget exhausted ({reading.hour_calls}/{params.max_calls_per_hour})",
        )
    if reading.day_calls >= params.max_calls_per_day:
        return Block(
            BlockReason.DAILY_BUDGET,
            f"Daily AI budget exhausted ({reading.day_calls}/{params.max_calls_per_day})",
        )
    return None


UNAVAILABLE = Block(
    BlockReason.GUARD_UNAVAILABLE, "Guardrail store unavailable: AI call blocked (fail closed)"
)


def hour_bucket(ts: datetime) -> str:
    """``YYYYMMDDHH`` of the event time (UTC): budgets count market hours, not wall-clock hours."""
    return ensure_utc(ts).strftime("%Y%m%d%H")


def day_bucket(ts: datetime) -> str:
    return ensure_utc(ts).strftime("%Y%m%d")


def cooldown_minutes(reject_count: int, params: GuardParams) -> int:
    """The ladder: first reject in the window 5 min, second 10, third and later 15."""
    if reject_count <= 1:
        return params.cooldown_minutes_1
    if reject_count == 2:
        return params.cooldown_minutes_2
    return params.cooldown_minutes_3


class StreakAction(StrEnum):
    """What a rejection does to the global state after the per-symbol cooldown is set."""

    BLOCK_LOW_CREDIT = "BLOCK_LOW_CREDIT"
    COUNT_ERROR = "COUNT_ERROR"
    RESET = "RESET"


def streak_action(error_kind: ErrorKind | None) -> StreakAction:
    if error_kind is ErrorKind.LOW_CREDIT:
        return StreakAction.BLOCK_LOW_CREDIT
    if error_kind in STREAK_KINDS:
        return StreakAction.COUNT_ERROR
    return StreakAction.RESET


def streak_blocks(streak: int, params: GuardParams) -> bool:
    return streak >= params.error_streak_threshold
