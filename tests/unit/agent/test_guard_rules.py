"""Guardrail rules without Redis (BEHAVIOUR §5.5; acceptance case K, pure half)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.agent.guard_rules import (
    Block,
    BlockReason,
    ErrorKind,
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

P = GuardParams()


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        pytest.param(GuardReading(), None, id="nothing-set-runs"),
        pytest.param(
            GuardReading(global_block_ttl=1799),
            Block(BlockReason.GLOBAL_BLOCK, "Global AI block active (1799s left)"),
            id="global-first",
        ),
        pytest.param(
            GuardReading(global_block_ttl=-1, cooldown_ttl=300),
            Block(BlockReason.SYMBOL_COOLDOWN, "Symbol AI cooldown active (300s left)"),
            id="global-without-expiry-ignored",
        ),
        pytest.param(
            GuardReading(cooldown_ttl=5, hour_calls=99),
            Block(BlockReason.SYMBOL_COOLDOWN, "Symbol AI cooldown active (5s left)"),
            id="cooldown-before-budget",
        ),
        pytest.param(
            GuardReading(hour_calls=20),
            Block(BlockReason.HOURLY_BUDGET, "Hourly AI budget exhausted (20/20)"),
            id="hour-20-of-20",
        ),
        pytest.param(
            GuardReading(hour_calls=19, day_calls=120),
            Block(BlockReason.DAILY_BUDGET, "Daily AI budget exhausted (120/120)"),
            id="day-120-of-120",
        ),
        pytest.param(GuardReading(hour_calls=19, day_calls=119), None, id="under-both-caps"),
    ],
)
def test_check_block_in_original_order(reading: GuardReading, expected: Block | None) -> None:
    assert check_block(reading, P) == expected


@pytest.mark.parametrize(("count", "minutes"), [(0, 5), (1, 5), (2, 10), (3, 15), (7, 15)])
def test_cooldown_ladder(count: int, minutes: int) -> None:
    assert cooldown_minutes(count, P) == minutes


def test_ttls_have_a_floor_of_sixty_seconds() -> None:
    assert (P.window_ttl_seconds, P.credit_block_ttl_seconds, P.error_block_ttl_seconds) == (1800, 3600, 1800)
    assert GuardParams(cooldown_window_minutes=0).window_ttl_seconds == 60


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        (None, StreakAction.RESET),
        (ErrorKind.LOW_CREDIT, StreakAction.BLOCK_LOW_CREDIT),
        (ErrorKind.TIMEOUT, StreakAction.COUNT_ERROR),
        (ErrorKind.RATE_LIMITED, StreakAction.COUNT_ERROR),
        (ErrorKind.OVERLOADED, StreakAction.COUNT_ERROR),
        (ErrorKind.SERVER_ERROR, StreakAction.COUNT_ERROR),
        (ErrorKind.CONNECTION, StreakAction.COUNT_ERROR),
        (ErrorKind.INVALID_OUTPUT, StreakAction.RESET),
        (ErrorKind.RECORD_MISSING, StreakAction.RESET),
    ],
)
def test_rejections_are_classified_by_error_kind_not_text(
    kind: ErrorKind | None, action: StreakAction
) -> None:
    assert streak_action(kind) is action


def test_timeouts_now_build_the_error_streak() -> None:
    """The original reset the streak on timeouts (§5.5 [BUG]); a run of timeouts must block."""
    assert streak_action(ErrorKind.TIMEOUT) is StreakAction.COUNT_ERROR
    assert not streak_blocks(4, P)
    assert streak_blocks(5, P)


def test_usage_buckets_follow_event_time_in_utc() -> None:
    ts = datetime(2026, 2, 18, 23, 59, 59, tzinfo=UTC)
    assert (hour_bucket(ts), day_bucket(ts)) == ("2026021823", "20260218")
