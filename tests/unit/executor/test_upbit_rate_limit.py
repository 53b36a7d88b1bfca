"""Upbit's Remaining-Req budget (services/executor/upbit/rate_limit.py), on a fake clock."""

from __future__ import annotations

import pytest

from services.executor.upbit.rate_limit import RateLimiter, Remaining, parse_remaining_req


class FakeTime:
    """A clock that only moves when the limiter sleeps; the sleeps are recorded."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("group=order; min=1800; sec=11", Remaining("order", 11, 1800), id="documented-form"),
        pytest.param("group=default;min=1800;sec=0", Remaining("default", 0, 1800), id="no-spaces"),
        pytest.param("group=orderbook; sec=9", Remaining("orderbook", 9, None), id="no-min"),
        pytest.param("group=order; min=1800", None, id="no-sec"),
        pytest.param("sec=3", None, id="no-group"),
        pytest.param("group=order; sec=x", None, id="sec-not-a-number"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_remaining_req(header: str | None, expected: Remaining | None) -> None:
    assert parse_remaining_req(header) == expected


def test_an_unknown_group_may_send_at_once() -> None:
    assert RateLimiter().delay("order", now=0.0) == 0.0


def test_a_group_with_requests_left_may_send() -> None:
    limiter = RateLimiter()
    limiter.observe("POST /v1/orders", "group=order; min=1800; sec=1", now=10.0)
    assert limiter.delay("order", now=10.1) == 0.0


def test_an_exhausted_group_waits_until_a_second_after_the_answer() -> None:
    limiter = RateLimiter()
    limiter.observe("POST /v1/orders", "group=order; min=1800; sec=0", now=10.0)
    assert limiter.delay("order", now=10.25) == pytest.approx(0.75)
    assert limiter.delay("order", now=11.0) == 0.0


def test_groups_are_counted_apart() -> None:
    limiter = RateLimiter()
    limiter.observe("POST /v1/orders", "group=order; min=1800; sec=0", now=10.0)
    limiter.observe("GET /v1/accounts", "group=default; min=1800; sec=29", now=10.0)
    assert limiter.delay("order", now=10.5) > 0
    assert limiter.delay("default", now=10.5) == 0.0


def test_spending_shrinks_the_budget_for_concurrent_callers() -> None:
    limiter = RateLimiter()
    limiter.observe("POST /v1/orders", "group=order; min=1800; sec=2", now=10.0)
    limiter.spend("order", now=10.1)
    limiter.spend("order", now=10.2)
    assert limiter.left("order") == 0
    assert limiter.delay("order", now=10.3) == pytest.approx(0.7)


def test_a_new_second_forgets_the_old_budget() -> None:
    limiter = RateLimiter()
    limiter.observe("POST /v1/orders", "group=order; min=1800; sec=0", now=10.0)
    limiter.spend("order", now=11.5)
    assert limiter.left("order") is None


def test_the_group_of_an_endpoint_is_learnt_from_its_answers() -> None:
    limiter = RateLimiter()
    assert limiter.group_of("DELETE /v1/order", default="default") == "default"
    limiter.observe("DELETE /v1/order", "group=order; min=1800; sec=7", now=1.0)
    assert limiter.group_of("DELETE /v1/order", default="default") == "order"


def test_an_unreadable_header_changes_nothing() -> None:
    limiter = RateLimiter()
    assert limiter.observe("GET /v1/accounts", "garbage", now=1.0) is None
    assert limiter.left("default") is None


async def test_acquire_sleeps_through_the_injected_sleeper_then_counts() -> None:
    time = FakeTime(now=50.0)
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    limiter.observe("POST /v1/orders", "group=order; min=1800; sec=0", now=49.6)
    await limiter.acquire("order")
    assert time.sleeps == [pytest.approx(0.6)]
    await limiter.acquire("default")  # another group never waits on "order"
    assert len(time.sleeps) == 1


async def test_acquire_with_budget_left_does_not_sleep() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    limiter.observe("GET /v1/accounts", "group=default; min=1800; sec=3", now=time.now)
    await limiter.acquire("default")
    assert time.sleeps == [] and limiter.left("default") == 2
