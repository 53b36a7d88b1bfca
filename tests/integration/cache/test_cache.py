"""Cache against the real Redis: TTLs, atomic counters, and the documented Redis-down behaviour."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from coinpilot.cache import Cache, keys
from coinpilot.errors import TransientError
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.redis


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[Cache]:
    c = Cache(redis_url)
    yield c
    await c.close()


@pytest.fixture
def key() -> str:
    return f"test:cache:{uuid.uuid4().hex}"


def fallbacks(purpose: str) -> float:
    return REGISTRY.get_sample_value("coinpilot_cache_fallbacks_total", {"purpose": purpose}) or 0.0


async def test_json_round_trips_with_its_ttl(cache: Cache, key: str) -> None:
    state = {"current_volatility": 0.8, "is_high_volatility": False, "symbol": "KRW-BTC"}
    await cache.set_json(key, state, ttl=keys.MARKET_REGIME_TTL_SECONDS)
    assert await cache.get_json(key) == state
    assert 7190 <= await cache.ttl(key) <= 7200
    await cache.delete(key)


async def test_a_value_without_ttl_never_expires_and_a_missing_key_reads_as_none(
    cache: Cache, key: str
) -> None:
    await cache.set(key, "BULL")
    assert await cache.ttl(key) == -1
    assert await cache.get(key) == "BULL"
    assert await cache.delete(key, f"{key}:absent") == 1
    assert await cache.ttl(key) == -2
    assert await cache.get_json(key) is None


async def test_incr_with_ttl_counts_every_concurrent_call_and_always_sets_the_ttl(
    cache: Cache, key: str
) -> None:
    values = await asyncio.gather(
        *(cache.incr_with_ttl(key, keys.AI_USAGE_HOUR_TTL_SECONDS) for _ in range(50))
    )
    assert sorted(values) == list(range(1, 51))
    assert 7190 <= await cache.ttl(key) <= 7200
    await cache.delete(key)


async def test_or_default_reads_return_the_stored_value_or_the_default_when_missing(
    cache: Cache, key: str
) -> None:
    before = fallbacks("test-missing")
    assert await cache.get_json_or_default(key, {"is_high_volatility": False}, "test-missing") == {
        "is_high_volatility": False
    }
    assert await cache.get_or_default(key, "UNKNOWN", "test-missing") == "UNKNOWN"
    assert fallbacks("test-missing") == before, "a missing key is not a fallback"
    await cache.set(key, "BEAR", ttl=60)
    assert await cache.get_or_default(key, "UNKNOWN", "test-missing") == "BEAR"
    await cache.delete(key)


async def test_malformed_json_falls_back_to_the_default_and_is_counted(
    cache: Cache, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    await cache.set(key, "{not json", ttl=60)
    before = fallbacks("test-malformed")
    with caplog.at_level(logging.WARNING, logger="coinpilot.cache"):
        assert await cache.get_json_or_default(key, 1.0, "test-malformed") == 1.0
    assert fallbacks("test-malformed") == before + 1
    assert f"malformed JSON at {key}: test-malformed falls back to 1.0" in caplog.text
    await cache.delete(key)


async def test_ping_is_true_for_a_live_server(cache: Cache) -> None:
    assert await cache.ping() is True


async def test_with_redis_down_reads_fall_back_loudly_and_plain_helpers_raise_transient(
    private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(private_redis.url)
    try:
        await cache.set_json("volatility", {"is_high_volatility": True})
        assert await cache.get_json_or_default("volatility", {}, "volatility multiplier") == {
            "is_high_volatility": True
        }
        private_redis.stop()

        before = fallbacks("volatility multiplier")
        with caplog.at_level(logging.WARNING, logger="coinpilot.cache"):
            value = await cache.get_json_or_default("volatility", 1.0, "volatility multiplier")
            regime = await cache.get_or_default("market:regime:KRW-BTC", "UNKNOWN", "regime")
        assert (value, regime) == (1.0, "UNKNOWN")
        assert fallbacks("volatility multiplier") == before + 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            "redis unavailable: volatility multiplier falls back to 1.0",
            "redis unavailable: regime falls back to UNKNOWN",
        ]

        for call in (
            lambda: cache.get("k"),
            lambda: cache.get_json("k"),
            lambda: cache.set_json("k", {}, ttl=10),
            lambda: cache.incr_with_ttl("k", 10),
            lambda: cache.ttl("k"),
            lambda: cache.delete("k"),
        ):
            with pytest.raises(TransientError, match="redis unavailable"):
                await call()
        assert await cache.ping() is False

        private_redis.start()
        assert await cache.incr_with_ttl("k", 10) == 1, "the same Cache reconnects once Redis is back"
    finally:
        await cache.close()


async def test_an_outage_costs_one_short_timeout_not_a_retry_storm(private_redis: RedisProcess) -> None:
    cache = Cache(private_redis.url)
    try:
        await cache.ping()
        private_redis.stop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransientError):
            await cache.get("k")
        assert loop.time() - started < 1.0
    finally:
        await cache.close()


async def test_the_first_call_after_redis_restarts_succeeds_on_the_pooled_client(
    private_redis: RedisProcess,
) -> None:
    """The pool's sockets died with the old server: each kind of call reconnects on its own once."""
    cache = Cache(private_redis.url)
    try:
        await cache.set("k", "before")
        async with cache.client.pipeline(transaction=False) as pipe:
            pipe.get("k")
            pipe.get("k")
            await pipe.execute()
        private_redis.stop()
        private_redis.start()  # same port, empty (no persistence)

        assert await cache.get("k") is None
        await cache.set("k", "after")
        assert await cache.incr_with_ttl("n", 10) == 1
        async with cache.client.pipeline(transaction=False) as pipe:
            pipe.get("k")
            pipe.incr("n")
            assert await pipe.execute() == ["after", 2]
    finally:
        await cache.close()


async def test_a_restart_is_invisible_to_every_pooled_connection(private_redis: RedisProcess) -> None:
    """Several sockets in the pool (concurrent calls) all died: every one of the next calls works."""
    cache = Cache(private_redis.url)
    try:
        await asyncio.gather(*(cache.incr_with_ttl("n", 10) for _ in range(8)))
        assert len(cache.client.connection_pool._available_connections) > 1
        private_redis.stop()
        private_redis.start()
        assert sorted(await asyncio.gather(*(cache.incr_with_ttl("n", 10) for _ in range(8)))) == list(
            range(1, 9)
        )
    finally:
        await cache.close()
