"""Two agent replicas on one durable (issue 21: the agent scales freely with per-order idempotency).

Two ``coinpilot run agent`` processes, each its own member id and metrics port, share
``agent-orders`` on a private NATS, one PostgreSQL and one Redis DB, and review against the fake
LLM (the real Anthropic SDK). A burst of proposals over eight symbols:

* both replicas decide, and each proposal gets exactly one decision: one ``agent_decisions`` row,
  one ``ai.decisions`` message and one ``orders.approved``/``orders.rejected`` in the streams, one
  model request per node, one unit of the daily budget;
* with the replica that is mid-call killed by SIGKILL, the other decides its proposal after the
  ack wait; still one decision each, and the model is asked again only for the call that was in
  flight (the analyst's answer, recorded before the kill, is read from ``llm_call_records``):
  at most one extra request per proposal in flight at the kill, none for a recorded call;
* with three calls left in the day, the two replicas racing through the burst review exactly three
  proposals and block the rest with ``DAILY_BUDGET``: the budget is not overshot.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from redis.asyncio import Redis
from sqlalchemy import func, select

from coinpilot.bus import Bus
from coinpilot.cache import keys
from coinpilot.contracts import OrderProposed
from coinpilot.db import AgentDecision, Database
from services.agent.guard_rules import GuardParams
from tests.integration.agent.test_agent_nats import agent_env, seed_market_data, subject_counts
from tests.support.fake_llm import FakeLlmServer, Reply, SeenRequest
from tests.support.replicas import Replica, holder, start_replica
from tests.support.servers import NatsProcess, isolated_nats, wait_for
from tests.unit.agent.factories import order

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(180)]

# Markets of these tests alone: the replicas warm their live books from the newest market_data
# rows of COINPILOT_SYMBOLS on start, so other tests' markets must not be seeded here.
CONFIRMED = ("KRW-RPA", "KRW-RPB", "KRW-RPC", "KRW-RPD", "KRW-RPE", "KRW-RPF")
REJECTED = ("KRW-RPX", "KRW-RPY")
SYMBOLS = CONFIRMED + REJECTED
ANSWER_SECONDS = 0.15  # each model answer takes this long, so the burst spreads over both replicas


def symbol_of(seen: SeenRequest) -> str:
    found = re.search(r"Symbol: (KRW-[A-Z]+)", seen.body["messages"][0]["content"])
    assert found is not None
    return found.group(1)


@pytest.fixture
async def own_nats() -> AsyncIterator[NatsProcess]:
    """A NATS of this test alone: the replicas' durables see no other test's orders."""
    async with isolated_nats() as server:
        yield server


def answering(hold_first_guardian: bool = False) -> Callable[[SeenRequest], Reply]:
    """Analyst CONFIRM (guardian SAFE) for ``CONFIRMED``, REJECT for ``REJECTED``, each after
    ``ANSWER_SECONDS``; optionally the first guardian call is held until released."""
    held: list[Reply] = []

    def respond(seen: SeenRequest) -> Reply:
        symbol = symbol_of(seen)
        if seen.tool_name == "guardian_decision":
            reply = Reply.guardian("SAFE", "Calm.")
            if hold_first_guardian and not held:
                held.append(reply.held())
                return reply
        elif symbol in CONFIRMED:
            reply = Reply.analyst("CONFIRM", 80, "Hammer.")
        else:
            reply = Reply.analyst("REJECT", 85, "Dead-cat bounce.")
        reply.held()
        asyncio.get_running_loop().call_later(ANSWER_SECONDS, reply.release)
        return reply

    return respond


@pytest.fixture
async def replicas(
    own_nats: NatsProcess,
    agent_db: Database,
    pg_url: str,
    redis_url: str,
    redis: Redis,
    fake_llm: FakeLlmServer,
    tmp_path: Path,
) -> AsyncIterator[list[Replica]]:
    env = agent_env(
        fake_llm,
        own_nats.url,
        pg_url,
        redis_url,
        COINPILOT_SYMBOLS=",".join(SYMBOLS),
        COINPILOT_ACK_WAIT_SECONDS="2",
        COINPILOT_AI_KEEPALIVE_SECONDS="0.5",
    )
    started = [start_replica("agent", i, env, tmp_path / "logs") for i in (1, 2)]
    try:
        await asyncio.gather(*(r.ready() for r in started))
        yield started
    finally:
        for r in started:
            r.stop()
        fake_llm.release_all()


async def publish_burst(nc: Client, at: datetime) -> list[OrderProposed]:
    bus = Bus(nc.jetstream(), "test")
    proposals = [order(at, symbol=s) for s in SYMBOLS]
    for proposal in proposals:
        await bus.publish(proposal, run_id="live")
    return proposals


async def decided(nc: Client) -> int:
    return sum((await subject_counts(nc, "AI", "ai.decisions.>")).values())


async def assert_one_decision_each(nc: Client, db: Database, proposals: list[OrderProposed]) -> None:
    """One row, one ``ai.decisions`` and one order outcome per proposal, nothing else."""
    assert await subject_counts(nc, "AI", "ai.decisions.>") == {f"ai.decisions.{s}": 1 for s in SYMBOLS}
    approved = await subject_counts(nc, "ORDERS", "orders.approved.>")
    rejected = await subject_counts(nc, "ORDERS", "orders.rejected.>")
    assert approved == {f"orders.approved.{s}": 1 for s in CONFIRMED}
    assert rejected == {f"orders.rejected.{s}": 1 for s in REJECTED}
    async with db.session() as session:
        rows = await session.execute(
            select(AgentDecision.order_id, AgentDecision.decision, func.count())
            .where(AgentDecision.order_id.in_([p.order_id for p in proposals]))
            .group_by(AgentDecision.order_id, AgentDecision.decision)
        )
        stored = {(order_id, decision): n for order_id, decision, n in rows.all()}
    expected = {(p.order_id, "CONFIRM" if p.symbol in CONFIRMED else "REJECT"): 1 for p in proposals}
    assert stored == expected


def requests_per_call(fake: FakeLlmServer) -> Counter[tuple[str, str | None]]:
    return Counter((symbol_of(r), r.tool_name) for r in fake.requests)


ONE_EACH = Counter(
    {**{(s, "analyst_decision"): 1 for s in SYMBOLS}, **{(s, "guardian_decision"): 1 for s in CONFIRMED}}
)


async def test_two_replicas_decide_a_burst_once_per_proposal(
    replicas: list[Replica],
    own_nats: NatsProcess,
    agent_db: Database,
    redis: Redis,
    fake_llm: FakeLlmServer,
    t0: datetime,
) -> None:
    at = await seed_market_data(agent_db, t0, SYMBOLS)
    fake_llm.responder = answering()
    nc = await nats.connect(own_nats.url)
    try:
        proposals = await publish_burst(nc, at)
        await wait_for(lambda: _all(nc, len(proposals)), timeout=60)
        await assert_one_decision_each(nc, agent_db, proposals)
    finally:
        await nc.close()
    assert requests_per_call(fake_llm) == ONE_EACH
    assert await redis.get(keys.ai_usage_day(at)) == str(len(SYMBOLS)).encode()
    shares = [await r.metric("coinpilot_ai_decisions_total") for r in replicas]
    print(f"decisions per replica: {shares}")
    assert sum(shares) == len(SYMBOLS) and all(share > 0 for share in shares)
    assert sum([await r.metric("coinpilot_agent_decisions_reemitted_total") for r in replicas]) == 0


async def _all(nc: Client, n: int) -> bool:
    return await decided(nc) >= n


async def test_a_replica_killed_mid_call_leaves_one_decision_per_proposal_and_one_extra_request(
    replicas: list[Replica],
    own_nats: NatsProcess,
    agent_db: Database,
    redis: Redis,
    fake_llm: FakeLlmServer,
    t0: datetime,
) -> None:
    at = await seed_market_data(agent_db, t0, SYMBOLS)
    fake_llm.responder = answering(hold_first_guardian=True)
    nc = await nats.connect(own_nats.url)
    try:
        proposals = await publish_burst(nc, at)
        await wait_for(lambda: any(r.tool_name == "guardian_decision" for r in fake_llm.requests), timeout=30)
        held = next(r for r in fake_llm.requests if r.tool_name == "guardian_decision")
        victim = holder(replicas, held.client_port)
        victim.kill()  # mid-burst: the other replica is reviewing the rest
        print(f"killed {victim.name} mid-call on {symbol_of(held)}; {await decided(nc)} decided then")
        fake_llm.release_all()  # the answer the killed replica never read
        await wait_for(lambda: _all(nc, len(proposals)), timeout=60)
        await assert_one_decision_each(nc, agent_db, proposals)
        info = await nc.jetstream().consumer_info("ORDERS", "agent-orders")
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        await nc.close()
    extra = requests_per_call(fake_llm) - ONE_EACH
    assert extra == Counter({(symbol_of(held), "guardian_decision"): 1})  # the call in flight, only
    assert await redis.get(keys.ai_usage_day(at)) == str(len(SYMBOLS)).encode()  # counted once each


async def test_two_replicas_racing_through_a_burst_never_overshoot_the_daily_budget(
    replicas: list[Replica],
    own_nats: NatsProcess,
    agent_db: Database,
    redis: Redis,
    fake_llm: FakeLlmServer,
    t0: datetime,
) -> None:
    at = await seed_market_data(agent_db, t0, SYMBOLS)
    left, cap = 3, GuardParams().max_calls_per_day
    await redis.set(keys.ai_usage_day(at), cap - left, ex=3600)
    fake_llm.responder = answering()
    nc = await nats.connect(own_nats.url)
    try:
        proposals = await publish_burst(nc, at)
        await wait_for(lambda: _all(nc, len(proposals)), timeout=60)
        assert await subject_counts(nc, "AI", "ai.decisions.>") == {f"ai.decisions.{s}": 1 for s in SYMBOLS}
    finally:
        await nc.close()
    async with agent_db.session() as session:
        rows = await session.execute(
            select(AgentDecision.decision, AgentDecision.reason_code).where(
                AgentDecision.order_id.in_([p.order_id for p in proposals])
            )
        )
        outcomes = Counter("reviewed" if d != "SKIP" else reason for d, reason in rows.all())
    assert outcomes == Counter({"reviewed": left, "AI_GUARDRAIL_BLOCKED": len(SYMBOLS) - left})
    assert len({symbol for symbol, _ in requests_per_call(fake_llm)}) == left  # analysts asked: 3
    assert await redis.get(keys.ai_usage_day(at)) == str(cap).encode()
    blocks = [await r.metric("coinpilot_ai_guardrail_blocks_total", reason="DAILY_BUDGET") for r in replicas]
    print(f"daily-budget blocks per replica: {blocks}")
    assert sum(blocks) == len(SYMBOLS) - left
