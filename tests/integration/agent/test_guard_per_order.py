"""The guardrails once per order, across deliveries and replicas (issue 21), on real Redis.

Two agent replicas share one run's keys. Each order is counted against the hourly and daily
budgets once and updates the cooldown ladder and the error streak once, whichever replica or
delivery asks, and two replicas racing for the last unit of a budget never both get it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from sqlalchemy import delete

from coinpilot.cache import keys
from coinpilot.db import AgentDecision, Database
from services.agent.guard_rules import BlockReason, ErrorKind, GuardParams
from services.agent.memory_stores import MemoryGuardStore
from services.agent.state import GuardStore
from tests.integration.agent.conftest import ServiceFactory
from tests.integration.agent.test_agent_service import decide, decision_row, feed_context
from tests.support.fake_llm import ANTHROPIC, FakeLlmServer, Reply
from tests.unit.agent.factories import order

pytestmark = pytest.mark.redis

SYM = "KRW-BTC"
T0 = datetime(2026, 2, 18, 9, 15, tzinfo=UTC)
P = GuardParams()
DAY = keys.ai_usage_day(T0)
HOUR = keys.ai_usage_hour(T0)


async def test_an_order_admitted_twice_is_counted_once(redis: Redis) -> None:
    store = GuardStore(redis)
    assert await store.admit("live", SYM, T0, P, order_id="o-1") is None
    assert await store.admit("live", SYM, T0, P, order_id="o-1") is None  # the redelivery
    assert (await redis.get(DAY), await redis.get(HOUR)) == (b"1", b"1")
    assert await store.admit("live", SYM, T0, P, order_id="o-2") is None
    assert await redis.get(DAY) == b"2"
    assert await redis.get(keys.ai_guard_order("o-1")) == b"admitted"


async def test_a_blocked_order_leaves_no_marker_and_is_judged_again(redis: Redis) -> None:
    store = GuardStore(redis)
    await redis.set(DAY, P.max_calls_per_day, ex=3600)
    block = await store.admit("live", SYM, T0, P, order_id="o-1")
    assert block is not None and block.reason is BlockReason.DAILY_BUDGET
    assert await redis.exists(keys.ai_guard_order("o-1")) == 0


async def test_two_replicas_racing_for_the_last_of_the_daily_budget_take_it_once(
    redis: Redis, redis_url: str
) -> None:
    """Two stores on two connections (two replicas), 12 orders at once, 3 calls left today."""
    left = 3
    await redis.set(DAY, P.max_calls_per_day - left, ex=3600)
    other = Redis.from_url(redis_url)
    try:
        replicas = [GuardStore(redis), GuardStore(other)]
        blocks = await asyncio.gather(
            *(replicas[i % 2].admit("live", f"KRW-S{i}", T0, P, order_id=f"o-{i}") for i in range(12))
        )
    finally:
        await other.aclose()
    assert sum(b is None for b in blocks) == left
    assert {b.reason for b in blocks if b is not None} == {BlockReason.DAILY_BUDGET}
    assert await redis.get(DAY) == str(P.max_calls_per_day).encode()


async def test_a_post_decision_update_asked_twice_for_one_order_climbs_the_ladder_once(redis: Redis) -> None:
    store = GuardStore(redis)
    await store.admit("live", SYM, T0, P, order_id="o-1")
    for _ in range(2):
        await store.after_decision("live", SYM, T0, False, ErrorKind.SERVER_ERROR, P, order_id="o-1")
    reject_count = await redis.get(keys.ai_symbol_reject_count(SYM))
    streak = await redis.get(keys.ai_error_streak())
    assert reject_count is not None and reject_count.startswith(b"1|")
    assert streak is not None and streak.startswith(b"1|")
    assert await redis.get(keys.ai_guard_order("o-1")) == b"settled"
    assert await store.admit("live", SYM, T0, P, order_id="o-1") is None  # settled implies admitted
    assert await redis.get(DAY) == b"1"


async def test_the_in_process_store_counts_and_updates_once_per_order_too() -> None:
    store = MemoryGuardStore()
    for _ in range(2):
        await store.admit("bt", SYM, T0, P, order_id="o-1")
        await store.after_decision("bt", SYM, T0, False, None, P, order_id="o-1")
    book = store.book("bt")
    assert book.day_calls == {"20260218": 1}
    assert book.rejects[SYM].count == 1


@pytest.mark.postgres
async def test_a_crash_after_the_guardrail_update_and_before_the_decision_row_decides_alike_once(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    """The guardrails are updated before the decision is stored: a crash in between (the row
    removed here) leaves the redelivery to answer from the call records, store the same
    decision, and neither count the order again nor climb the ladder twice."""
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("REJECT", 88, "Dead-cat bounce."))
    first = await decide(agent, proposed)
    async with agent_db.session() as session:
        await session.execute(delete(AgentDecision).where(AgentDecision.order_id == proposed.order_id))

    again = await decide(agent, proposed)

    assert [m.to_json() for m in again] == [m.to_json() for m in first]
    assert (await decision_row(agent_db, proposed.order_id)).decision == "REJECT"
    assert fake_llm.count() == 1  # the analyst's answer came from its record
    assert await redis.get(keys.ai_usage_day(proposed.ts_event)) == b"1"
    rejects = await redis.get(keys.ai_symbol_reject_count("KRW-BTC"))
    assert rejects is not None and rejects.startswith(b"1|")
    assert await redis.get(keys.ai_symbol_cooldown("KRW-BTC")) is not None
