"""Risk's two caches keep the same semantics: Redis (``state.RiskCache``) and memory
(``stores.MemoryRiskCache``, the backtest's).

Each test runs against both. A Redis value is read back through a second ``RiskCache`` (what
another replica, or the process after a restart, sees), so the test checks Redis and not only the
first cache's mirror. The refit policy (``refit.on_hourly_close``) over each store makes the same
fits, drops the same failed state and alerts the same.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from coinpilot.analytics.volatility import VolatilityFitError, VolatilityState
from coinpilot.cache import Cache
from coinpilot.strategy_config import load_strategy_config
from services.risk import refit, state
from services.risk.stores import MemoryRiskCache, RiskCacheStore
from tests.integration.risk.harness import new_run_id

pytestmark = pytest.mark.redis
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
FEW = load_strategy_config(None).risk_management.volatility.model_copy(
    update={"min_returns": 30, "window_hours": 48, "refit_at_utc": time(0, 5)}
)


@dataclass
class Pair:
    """The cache a run writes through and the one that reads back what it stored."""

    writer: RiskCacheStore
    reader: RiskCacheStore


@pytest.fixture(params=["redis", "memory"])
async def caches(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Pair]:
    if request.param == "memory":
        memory = MemoryRiskCache()
        yield Pair(memory, memory)
        return
    writer, reader = Cache(redis_url), Cache(redis_url)
    yield Pair(state.RiskCache(writer, retry_seconds=0), state.RiskCache(reader, retry_seconds=0))
    await writer.close()
    await reader.close()


async def test_the_latest_price_wins_whatever_the_order_it_arrives_in(caches: Pair) -> None:
    run_id = new_run_id("prices")
    await caches.writer.note_price(run_id, "KRW-BTC", Decimal(101), T0 + HOUR)
    await caches.writer.note_price(run_id, "KRW-BTC", Decimal(99), T0)  # older: ignored
    await caches.writer.note_price(run_id, "KRW-ETH", Decimal(5), T0)
    await caches.writer.note_price(run_id, "KRW-ETH", Decimal(6), T0)  # same instant: replaces
    prices = await caches.reader.prices(run_id, ["KRW-BTC", "KRW-ETH", "KRW-XRP"])
    assert prices == {"KRW-BTC": Decimal(101), "KRW-ETH": Decimal(6)}


async def test_a_days_reference_equity_is_kept_for_that_day_only(caches: Pair) -> None:
    run_id = new_run_id("reference")
    assert await caches.reader.reference_equity(run_id, T0.date()) is None
    await caches.writer.keep_reference_equity(run_id, T0.date(), Decimal("10000000.5"), 3600)
    assert await caches.reader.reference_equity(run_id, T0.date()) == Decimal("10000000.5")
    assert await caches.reader.reference_equity(run_id, (T0 + 24 * HOUR).date()) is None


async def test_the_hourly_window_replaces_a_redelivered_hour_and_keeps_the_last_hours(caches: Pair) -> None:
    run_id = new_run_id("window")
    for k in range(5):
        await caches.writer.add_hourly_close(run_id, "KRW-BTC", T0 + k * HOUR, Decimal(100 + k), keep=3)
    await caches.writer.add_hourly_close(run_id, "KRW-BTC", T0 + 3 * HOUR, Decimal("103.5"), keep=3)
    assert await caches.reader.hourly_closes(run_id, "KRW-BTC") == [
        (T0 + 2 * HOUR, Decimal(102)),
        (T0 + 3 * HOUR, Decimal("103.5")),
        (T0 + 4 * HOUR, Decimal(104)),
    ]
    assert window_after([(T0 + k * HOUR, Decimal(k)) for k in range(5)]) == [
        (T0 + 2 * HOUR, Decimal(2)),
        (T0 + 3 * HOUR, Decimal("3.5")),
        (T0 + 4 * HOUR, Decimal(4)),
    ]


async def test_recorded_hours_added_at_once_are_the_hours_added_one_by_one(caches: Pair) -> None:
    """``add_hourly_closes`` (the seed from recorded history) == ``add_hourly_close`` in a loop:
    an hour already there is replaced, older ones beyond ``keep`` go, in one write."""
    run_id = new_run_id("seed")
    await caches.writer.add_hourly_close(run_id, "KRW-BTC", T0 + 5 * HOUR, Decimal(1), keep=4)
    hours = [(T0 + k * HOUR, Decimal(100 + k)) for k in range(7)]
    await caches.writer.add_hourly_closes(run_id, "KRW-BTC", hours, keep=4)
    expected = [(T0 + k * HOUR, Decimal(100 + k)) for k in range(3, 7)]
    assert await caches.reader.hourly_closes(run_id, "KRW-BTC") == expected
    one_by_one: refit.Window = [(T0 + 5 * HOUR, Decimal(1))]
    for ts_open, close in hours:
        one_by_one = refit.window_with(one_by_one, ts_open, close, 4)
    assert one_by_one == expected == refit.windows_with([(T0 + 5 * HOUR, Decimal(1))], hours, 4)


def window_after(window: refit.Window) -> refit.Window:
    """The pure rule the memory store applies (``refit.window_with``), on the same inputs."""
    for ts_open, close in window:
        window = refit.window_with(window, ts_open, close, 3)
    return refit.window_with(window, T0 + 3 * HOUR, Decimal("3.5"), 3)


async def test_a_kept_volatility_state_is_read_and_a_dropped_one_is_gone(caches: Pair) -> None:
    run_id = new_run_id("volatility")
    fitted = VolatilityState("KRW-BTC", 2.5, True, T0, 2160, 1.5)
    assert (await caches.reader.volatility(run_id, "KRW-BTC")).state is None
    await caches.writer.keep_volatility(run_id, fitted)
    assert (await caches.reader.volatility(run_id, "KRW-BTC")).state == fitted
    await caches.writer.drop_volatility(run_id, "KRW-BTC")
    assert (await caches.reader.volatility(run_id, "KRW-BTC")).state is None


def fitter(fail_on: set[int]) -> tuple[refit.Fit, list[tuple[int, datetime]]]:
    """A deterministic stand-in for GARCH: sigma from the closes; fails on the given calls."""
    calls: list[tuple[int, datetime]] = []

    async def fit(symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState:
        calls.append((len(closes), now))
        if len(calls) in fail_on:
            raise VolatilityFitError("did not converge")
        sigma = float(max(closes) - min(closes)) / float(closes[-1]) * 100
        return VolatilityState(symbol, sigma, sigma > 1.5, now, len(closes) - 1, 1.5)

    return fit, calls


async def refits_over(store: RiskCacheStore, hours: int) -> tuple[list[tuple[str, object]], list]:
    run_id = new_run_id("refit")
    fit, calls = fitter(fail_on={2})
    made: list[tuple[str, object]] = []
    for k in range(hours):
        ts_open = T0 + k * HOUR
        close = Decimal(f"{100 * (1 + 0.02 * math.sin(k / 3)):.4f}")
        done = await refit.on_hourly_close(store, run_id, "KRW-BTC", ts_open, close, ts_open + HOUR, FEW, fit)
        if done.result is not refit.RefitResult.NOT_DUE:
            alert = done.alert(ts_open + HOUR)
            made.append((done.result.value, None if alert is None else alert.type))
    return made, calls


async def test_the_refit_policy_makes_the_same_fits_over_either_store(caches: Pair, redis_url: str) -> None:
    made, calls = await refits_over(caches.writer, 4 * 24)
    # every hour is due until min_returns returns exist; then a fit a day, on the first hour at or
    # after 00:05; a failed fit leaves no state, so the next hour is due again
    assert [r for r, _ in made] == ["insufficient"] * 30 + ["fitted", "failed", "fitted", "fitted", "fitted"]
    day = T0.replace(hour=0)
    assert [now for _, now in calls] == [
        day + timedelta(days=1, hours=19),
        day + timedelta(days=2, hours=1),
        day + timedelta(days=2, hours=2),
        day + timedelta(days=3, hours=1),
        day + timedelta(days=4, hours=1),
    ]
    assert [n for n, _ in calls] == [31, 37, 38, 49, 49]  # closed hours, at most window_hours + 1
    memory_made, memory_calls = await refits_over(MemoryRiskCache(), 4 * 24)
    assert (made, calls) == (memory_made, memory_calls)
