"""The guardrail gauges follow the TTLs that were read: a block or streak that expires in Redis
reads 0 at the next scrape even when nothing reads the keys again."""

from __future__ import annotations

import pytest

from services.agent.state import GuardGauges


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("block_ttl", "seconds_later", "shown"),
    [
        (1800, 0.0, 1.0),
        (1800, 1799.5, 1.0),
        (1800, 1800.0, 0.0),
        (-1, 0.0, 0.0),  # a block key without a TTL does not block (check_block), so it shows 0
        (-2, 0.0, 0.0),
    ],
)
def test_the_global_block_gauge_is_one_until_the_block_expires(
    block_ttl: int, seconds_later: float, shown: float
) -> None:
    clock = Clock()
    gauges = GuardGauges(clock)
    gauges.show(block_ttl, 0, -2)
    clock.now += seconds_later
    assert gauges.global_block() == shown


@pytest.mark.parametrize(
    ("streak", "streak_ttl", "seconds_later", "shown"),
    [
        (3, 3600, 0.0, 3.0),
        (3, 3600, 3599.0, 3.0),
        (3, 3600, 3600.0, 0.0),
        (3, -1, 1e9, 3.0),  # no expiry on the key: the streak stands
        (0, -2, 0.0, 0.0),
    ],
)
def test_the_error_streak_gauge_shows_the_streak_until_its_key_expires(
    streak: int, streak_ttl: int, seconds_later: float, shown: float
) -> None:
    clock = Clock()
    gauges = GuardGauges(clock)
    gauges.show(-2, streak, streak_ttl)
    clock.now += seconds_later
    assert gauges.error_streak() == shown


def test_a_new_reading_replaces_the_previous_one() -> None:
    gauges = GuardGauges(Clock())
    gauges.show(1800, 5, 3600)
    gauges.show(-2, 0, -2)
    assert (gauges.global_block(), gauges.error_streak()) == (0.0, 0.0)
