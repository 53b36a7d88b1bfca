"""Guardrails over real Redis on EVENT time (BEHAVIOUR §5.5; acceptance case K).

Nothing waits and no TTL is rewritten: time moves because the orders' ``ts_event`` moves. Expiries
are asserted as the values stored (``<head>|<until>``); the Redis TTL only collects garbage.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from coinpilot.cache import keys
from coinpilot.errors import TransientError
from services.agent import metrics as m
from services.agent.guard_redis_codec import GC_MARGIN_SECONDS
from services.agent.guard_rules import UNAVAILABLE, BlockReason, ErrorKind, GuardParams
from services.agent.state import GuardStore
from tests.support.proxy import TcpProxy
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.redis

SYM = "KRW-BTC"
T0 = datetime(2026, 2, 18, 9, 15, tzinfo=UTC)
P = GuardParams()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamped(head: object, minutes: float) -> bytes:
    return f"{head}|{at(minutes).isoformat()}".encode()


async def reject(store: GuardStore, minutes: float, kind: ErrorKind | None = None, symbol: str = SYM) -> None:
    await store.after_decision("live", symbol, at(minutes), False, kind, P)


async def test_case_k_rejections_climb_the_ladder_on_event_time(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0)  # t0, "pattern reject"
    assert await redis.get(keys.ai_symbol_cooldown(SYM)) == stamped(5, 5)
    assert await redis.get(keys.ai_symbol_reject_count(SYM)) == stamped(1, 30)

    assert await store.admit("live", SYM, at(6), P) is None  # the 5 minutes are over by event time
    await reject(store, 6)
    assert await redis.get(keys.ai_symbol_cooldown(SYM)) == stamped(10, 16)
    assert await redis.get(keys.ai_symbol_reject_count(SYM)) == stamped(2, 36)  # window refreshed

    assert await store.admit("live", SYM, at(17), P) is None
    await reject(store, 17)
    assert await redis.get(keys.ai_symbol_cooldown(SYM)) == stamped(15, 32)
    assert await redis.get(keys.ai_symbol_reject_count(SYM)) == stamped(3, 47)


async def test_the_keys_carry_a_ttl_only_to_collect_garbage(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0, ErrorKind.TIMEOUT)
    assert await redis.ttl(keys.ai_symbol_cooldown(SYM)) == 300 + GC_MARGIN_SECONDS
    assert await redis.ttl(keys.ai_symbol_reject_count(SYM)) == 1800 + GC_MARGIN_SECONDS
    assert await redis.ttl(keys.ai_error_streak()) == 3600 + GC_MARGIN_SECONDS


async def test_the_window_expires_by_event_time_and_the_ladder_starts_again(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0)
    await reject(store, 6)
    assert await redis.get(keys.ai_symbol_cooldown(SYM)) == stamped(10, 16)
    await reject(store, 37)  # the window of the reject at t0+6 ended at t0+36
    assert await redis.get(keys.ai_symbol_cooldown(SYM)) == stamped(5, 42)
    assert await redis.get(keys.ai_symbol_reject_count(SYM)) == stamped(1, 67)


async def test_a_cooldown_blocks_its_own_symbol_until_its_event_time_end(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0)
    block = await store.admit("live", SYM, at(1), P)
    assert block is not None and block.reason is BlockReason.SYMBOL_COOLDOWN
    assert block.message == "Symbol AI cooldown active (240s left)"
    assert await store.admit("live", "KRW-ETH", at(1), P) is None
    assert await store.admit("live", SYM, at(5), P) is None  # ends exactly at t0 + 5 min


async def test_approval_clears_the_reject_count_and_error_streak(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0, ErrorKind.TIMEOUT)
    assert await redis.exists(keys.ai_symbol_reject_count(SYM), keys.ai_error_streak()) == 2
    await store.after_decision("live", SYM, at(40), True, None, P)
    assert await redis.exists(keys.ai_symbol_reject_count(SYM), keys.ai_error_streak()) == 0


async def test_five_consecutive_ai_errors_block_every_symbol_for_thirty_event_minutes(redis: Redis) -> None:
    store = GuardStore(redis)
    for n in range(1, 5):
        await reject(store, n, ErrorKind.SERVER_ERROR)
        assert await redis.get(keys.ai_error_streak()) == stamped(n, n + 60)
        assert await redis.exists(keys.ai_global_block()) == 0
    await reject(store, 5, ErrorKind.RATE_LIMITED)
    assert await redis.get(keys.ai_global_block()) == stamped("error_streak", 35)
    assert await redis.ttl(keys.ai_global_block()) == 1800 + GC_MARGIN_SECONDS
    block = await store.admit("live", "KRW-ETH", at(5), P)
    assert block is not None and block.reason is BlockReason.GLOBAL_BLOCK
    assert block.message == "Global AI block active (1800s left)"
    assert await store.admit("live", "KRW-ETH", at(35), P) is None


async def test_timeouts_count_towards_the_streak_and_market_rejections_reset_it(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0, ErrorKind.TIMEOUT)
    await reject(store, 1, ErrorKind.TIMEOUT)
    assert await redis.get(keys.ai_error_streak()) == stamped(2, 61)
    await reject(store, 2, None)
    assert await redis.exists(keys.ai_error_streak()) == 0


async def test_the_streak_forgets_errors_older_than_an_event_hour(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0, ErrorKind.SERVER_ERROR)
    await reject(store, 61, ErrorKind.SERVER_ERROR)
    assert await redis.get(keys.ai_error_streak()) == stamped(1, 121)


async def test_low_credit_sets_a_one_hour_block_and_leaves_the_streak(redis: Redis) -> None:
    store = GuardStore(redis)
    await reject(store, 0, ErrorKind.SERVER_ERROR)
    await reject(store, 1, ErrorKind.LOW_CREDIT)
    assert await redis.get(keys.ai_global_block()) == stamped("low_credit", 61)
    assert await redis.ttl(keys.ai_global_block()) == 3600 + GC_MARGIN_SECONDS
    assert await redis.get(keys.ai_error_streak()) == stamped(1, 60)


async def test_admit_counts_the_call_in_event_time_buckets_with_their_ttls(redis: Redis) -> None:
    store = GuardStore(redis)
    assert await store.admit("live", SYM, T0, P) is None
    assert await redis.get("ai:usage:hour:2026021809") == b"1"
    assert await redis.get("ai:usage:day:20260218") == b"1"
    assert await redis.ttl("ai:usage:hour:2026021809") == 7200
    assert await redis.ttl("ai:usage:day:20260218") == 172_800


async def test_concurrent_writers_each_count_once(redis: Redis) -> None:
    store = GuardStore(redis)
    symbols = [f"KRW-S{i}" for i in range(8)]
    blocks = await asyncio.gather(*(store.admit("live", s, T0, P) for s in symbols))
    assert blocks == [None] * 8
    assert await redis.get("ai:usage:hour:2026021809") == b"8"
    await asyncio.gather(*(reject(store, 0) for _ in range(3)))
    assert await redis.get(keys.ai_symbol_reject_count(SYM)) == stamped(3, 30)


async def test_hour_counter_at_the_limit_blocks(redis: Redis) -> None:
    store = GuardStore(redis)
    await redis.set("ai:usage:hour:2026021809", 20, ex=7200)
    block = await store.admit("live", SYM, T0, P)
    assert block is not None and block.reason is BlockReason.HOURLY_BUDGET
    assert block.message == "Hourly AI budget exhausted (20/20)"
    assert await redis.get("ai:usage:hour:2026021809") == b"20"  # a blocked call spends nothing
    assert await store.admit("live", SYM, at(45), P) is None  # 10:00, the next event-time hour


async def test_day_counter_at_the_limit_blocks(redis: Redis) -> None:
    store = GuardStore(redis)
    await redis.set("ai:usage:day:20260218", 120, ex=172_800)
    block = await store.admit("live", SYM, T0, P)
    assert block is not None and block.message == "Daily AI budget exhausted (120/120)"


async def test_a_replay_run_has_its_own_keys(redis: Redis) -> None:
    store = GuardStore(redis)
    await redis.set("ai:usage:hour:2026021809", 20, ex=7200)
    assert await store.admit("replay-1", SYM, T0, P) is None
    assert await redis.get("run:replay-1:ai:usage:hour:2026021809") == b"1"


async def test_a_bare_value_of_the_original_expires_with_its_redis_ttl(redis: Redis) -> None:
    store = GuardStore(redis)
    await redis.set(keys.ai_symbol_cooldown(SYM), "5", ex=120)
    block = await store.admit("live", SYM, T0, P)
    assert block is not None and block.reason is BlockReason.SYMBOL_COOLDOWN
    await redis.set(keys.ai_symbol_cooldown(SYM), "5")  # no TTL: never blocked (as §5.5 reads TTLs)
    assert await store.admit("live", SYM, T0, P) is None


async def test_an_unreadable_value_fails_closed_and_is_counted(redis: Redis) -> None:
    store = GuardStore(redis)
    await redis.set(keys.ai_global_block(), "error_streak|not-a-time", ex=60)
    before = m.GUARDRAIL_STORE_ERRORS.labels("admit")._value.get()
    assert await store.admit("live", SYM, T0, P) == UNAVAILABLE
    assert m.GUARDRAIL_STORE_ERRORS.labels("admit")._value.get() == before + 1


async def test_no_redis_configured_never_blocks() -> None:
    assert await GuardStore(None).admit("live", SYM, T0, P) is None


async def test_redis_down_makes_the_order_wait_and_defers_the_update_in_order(
    private_redis: RedisProcess,
) -> None:
    """Fail-closed would change the decision, so an outage makes the order wait (issue 19); an
    update after a decision is applied before the next read of the keys."""
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    client = Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    store = GuardStore(client)
    try:
        assert await store.admit("live", SYM, T0, P) is None
        proxy.refuse()
        before = m.GUARDRAIL_STORE_ERRORS.labels("admit")._value.get()
        with pytest.raises(TransientError, match="guardrails of KRW-BTC"):
            await store.admit("live", SYM, at(1), P)
        assert m.GUARDRAIL_STORE_ERRORS.labels("admit")._value.get() == before + 1
        await reject(store, 0)  # never raised: kept until Redis answers
        await reject(store, 0, symbol="KRW-ETH")

        proxy.restore()
        block = await store.admit("live", SYM, at(1), P)
        assert block is not None and block.reason is BlockReason.SYMBOL_COOLDOWN
        direct = Redis.from_url(private_redis.url)
        assert await direct.get(keys.ai_symbol_cooldown("KRW-ETH")) == stamped(5, 5)
        await direct.aclose()
    finally:
        await client.aclose()
        proxy.close()


async def test_a_deferred_update_that_meets_an_unreadable_value_is_dropped_not_retried_forever(
    private_redis: RedisProcess,
) -> None:
    proxy = TcpProxy("127.0.0.1", private_redis.port).start()
    client = Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    store = GuardStore(client)
    try:
        proxy.refuse()
        await reject(store, 0)
        proxy.restore()
        await client.set(keys.ai_symbol_cooldown(SYM), "5|not-a-time", ex=60)
        before = m.GUARDRAIL_STORE_ERRORS.labels("update")._value.get()
        assert await store.admit("live", "KRW-ETH", at(1), P) is None
        assert m.GUARDRAIL_STORE_ERRORS.labels("update")._value.get() == before + 1
        assert await store.admit("live", "KRW-ETH", at(2), P) is None
    finally:
        await client.aclose()
        proxy.close()
