"""Upbit client pieces without a network: headers, backoff, the rate limiter on a manual clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from services.collector.upbit import (
    RateLimiter,
    RemainingReq,
    RetryPolicy,
    parse_remaining_req,
    parse_retry_after,
)
from tests.integration.collector.fake_upbit import ManualClock


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("group=candles; min=1800; sec=9", RemainingReq("candles", 1800, 9), id="upbit-format"),
        pytest.param("group=candles;sec=0", RemainingReq("candles", None, 0), id="no-min"),
        pytest.param("garbage", RemainingReq("", None, None), id="unreadable"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_remaining_req(header: str | None, expected: RemainingReq | None) -> None:
    assert parse_remaining_req(header) == expected


@pytest.mark.parametrize(("value", "expected"), [("1", 1.0), ("0.5", 0.5), ("soon", None), (None, None)])
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    policy = RetryPolicy(max_attempts=8, base_seconds=0.5, cap_seconds=30.0)
    rng = random.Random(7)
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (8, 30.0)]:
        for _ in range(50):
            assert step / 2 <= policy.delay(attempt, rng) <= step


async def test_the_rate_limiter_spaces_request_starts_to_at_most_8_per_second() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    limiter = RateLimiter(clock, 8.0)
    starts = []
    for _ in range(20):
        await limiter.acquire()
        starts.append(clock.monotonic())
    assert all(sum(1 for t in starts if s <= t < s + 1.0) <= 8 for s in starts)
    assert starts[-1] - starts[0] == pytest.approx(19 / 8)


async def test_hold_until_pauses_the_next_request() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    limiter = RateLimiter(clock, 8.0)
    await limiter.acquire()
    limiter.hold_until(clock.monotonic() + 1.0)
    await limiter.acquire()
    assert clock.sleeps == [1.0]


def test_more_than_upbits_10_requests_per_second_is_refused() -> None:
    with pytest.raises(ValueError, match="10"):
        RateLimiter(ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), 12.0)
