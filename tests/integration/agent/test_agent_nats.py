"""The agent as a service on a private real NATS: orders in, decisions out, no loss on a kill.

* ``orders.proposed`` in -> ``ai.decisions`` + ``orders.approved`` / ``orders.rejected`` out, with
  ``in_progress()`` keeping a slow review alive past the ack wait (no redelivery storm).
* An agent process killed (SIGKILL) while the fake model holds its answer loses no order: a
  second agent gets the redelivery and each order is decided exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import func, insert, select

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.contracts import AiDecision, AiVerdict, Contract, OrderApproved, OrderRejected, RejectReason
from coinpilot.db import AgentDecision, Database, MarketData
from coinpilot.settings import CommonSettings
from tests.support.fake_llm import ANTHROPIC, TEST_KEY, FakeLlmServer, Reply, SeenRequest
from tests.support.servers import NatsProcess, free_port, isolated_nats, wait_for
from tests.unit.agent.factories import gentle_uptrend, hourly_candle, order

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def own_nats() -> AsyncIterator[NatsProcess]:
    """A NATS of this test alone: no other test's orders reach the agent's durables."""
    async with isolated_nats() as server:
        yield server


def agent_env(
    fake: FakeLlmServer, nats_url: str, pg_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    return {
        "COINPILOT_NATS_URL": nats_url,
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_REDIS_URL": redis_url,
        "COINPILOT_HTTP_HOST": "127.0.0.1",
        "COINPILOT_HTTP_PORT": str(free_port()),
        "COINPILOT_SYMBOLS": "KRW-BTC,KRW-ETH",
        "COINPILOT_PULL_BATCH_SIZE": "1",
        "COINPILOT_ANTHROPIC_API_KEY": TEST_KEY,
        "COINPILOT_ANTHROPIC_BASE_URL": fake.anthropic_url,
        "COINPILOT_OPENAI_API_KEY": "",
        "COINPILOT_LLM_MAX_RETRIES": "0",
        "COINPILOT_AI_CONTEXT_WAIT_SECONDS": "0",
        "COINPILOT_LLM_MODE_SOURCE": "live",
        **extra,
    }


class Outputs:
    """Everything the agent publishes, parsed, from core subscriptions on the private NATS."""

    def __init__(self) -> None:
        self.messages: list[Contract] = []

    async def subscribe(self, nc: Client) -> None:
        async def on(msg) -> None:  # type: ignore[no-untyped-def]
            kind = msg.subject.split(".")[1]
            parser = {"decisions": AiDecision, "approved": OrderApproved, "rejected": OrderRejected}[kind]
            self.messages.append(parser.from_json(msg.data))

        for subject in ("ai.decisions.>", "orders.approved.>", "orders.rejected.>"):
            await nc.subscribe(subject, cb=on)

    def of(self, kind: type[Contract]) -> list[Contract]:
        return [m for m in self.messages if isinstance(m, kind)]


def keepalives() -> float:
    return REGISTRY.get_sample_value("coinpilot_agent_keepalives_total") or 0.0


async def subject_counts(nc: Client, stream: str, subjects: str) -> dict[str, int]:
    info = await nc.jetstream().stream_info(stream, subjects_filter=subjects)
    return dict(info.state.subjects or {})


async def test_orders_in_decisions_out_and_a_slow_review_is_kept_alive(
    own_nats: NatsProcess,
    agent_db: Database,
    pg_url: str,
    redis_url: str,
    redis: Redis,
    fake_llm: FakeLlmServer,
    t0: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = agent_env(
        fake_llm,
        own_nats.url,
        pg_url,
        redis_url,
        COINPILOT_ACK_WAIT_SECONDS="1",
        COINPILOT_AI_KEEPALIVE_SECONDS="0.2",
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    host = ServiceHost(["agent"], CommonSettings(), serve_http=False)
    await host.start()
    nc = await nats.connect(own_nats.url)
    outputs = Outputs()
    await outputs.subscribe(nc)
    bus = Bus(nc.jetstream(), "test")
    try:
        bars = gentle_uptrend(24, t0=t0)
        for bar in bars:
            await bus.publish(hourly_candle(bar), run_id="live")
        agent = host.runtimes[0].extras["agent"]
        wanted = {b.ts_open for b in bars}
        await wait_for(lambda: wanted <= {b.ts_open for b in agent.book("live").bars.get("KRW-BTC", ())})

        at = bars[-1].ts_close + timedelta(minutes=1)
        slow = Reply.analyst("CONFIRM", 77, "Hammer.").held()
        fake_llm.script(ANTHROPIC, slow, Reply.guardian("SAFE", "Calm."))
        btc, eth = order(at, amount="1800000"), order(at, symbol="KRW-ETH")  # ETH has no context
        await bus.publish(btc, run_id="live")
        await bus.publish(eth, run_id="live")

        await fake_llm.wait_for_requests(1)
        start = keepalives()
        await wait_for(lambda: keepalives() >= start + 8, timeout=10)  # > 1.6 s, the ack wait is 1 s
        slow.release()
        await wait_for(lambda: len(outputs.of(AiDecision)) == 2 and len(outputs.messages) == 4, timeout=15)

        approved = outputs.of(OrderApproved)
        assert len(approved) == 1
        assert (approved[0].order_id, approved[0].amount, approved[0].reference_price) == (
            btc.order_id,
            Decimal("1800000"),
            btc.reference_price,
        )
        rejected = outputs.of(OrderRejected)
        assert [(r.order_id, r.reason) for r in rejected] == [(eth.order_id, RejectReason.AI_CONTEXT_SHORT)]
        verdicts = {d.order_id: d.decision for d in outputs.of(AiDecision)}
        assert verdicts == {btc.order_id: AiVerdict.CONFIRM, eth.order_id: AiVerdict.SKIP}
        info = await nc.jetstream().consumer_info("ORDERS", "agent-orders")
        assert info.num_redelivered == 0
        assert fake_llm.count() == 2
    finally:
        await nc.close()
        await host.stop()


async def seed_market_data(db: Database, t0: datetime, symbols: tuple[str, ...]) -> datetime:
    """24 hours of 1m rows per symbol, as the collector would have stored them."""
    rows = []
    for symbol in symbols:
        for bar in gentle_uptrend(24, t0=t0):
            for minute in range(60):
                price = Decimal(str(bar.open if minute == 0 else bar.close))
                rows.append(
                    {
                        "symbol": symbol,
                        "interval": "1m",
                        "timestamp": bar.ts_open + timedelta(minutes=minute),
                        "open_price": price,
                        "high_price": price,
                        "low_price": price,
                        "close_price": price,
                        "volume": Decimal("0.5"),
                    }
                )
    async with db.session() as session:
        await session.execute(insert(MarketData), rows)
    return t0 + timedelta(hours=24, minutes=1)


async def test_a_killed_agent_loses_no_order_and_each_is_decided_once(
    own_nats: NatsProcess,
    agent_db: Database,
    pg_url: str,
    redis_url: str,
    redis: Redis,
    fake_llm: FakeLlmServer,
    t0: datetime,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    at = await seed_market_data(agent_db, t0, ("KRW-BTC", "KRW-ETH"))
    env = agent_env(
        fake_llm,
        own_nats.url,
        pg_url,
        redis_url,
        COINPILOT_ACK_WAIT_SECONDS="2",
        COINPILOT_AI_KEEPALIVE_SECONDS="0.5",
    )
    held = Reply.analyst("CONFIRM", 90, "First agent: never delivered.").held()
    fake_llm.script(ANTHROPIC, held)
    answers = {
        ("KRW-BTC", "analyst_decision"): Reply.analyst("CONFIRM", 80, "Hammer."),
        ("KRW-BTC", "guardian_decision"): Reply.guardian("SAFE", "Calm."),
        ("KRW-ETH", "analyst_decision"): Reply.analyst("REJECT", 85, "Dead-cat bounce."),
    }

    def by_symbol(seen: SeenRequest) -> Reply | None:
        """After the held first call, answer by symbol: the redelivered order may come second."""
        if len(fake_llm.requests) == 1:
            return None
        symbol = "KRW-BTC" if "Symbol: KRW-BTC" in seen.body["messages"][0]["content"] else "KRW-ETH"
        return answers[(symbol, seen.tool_name or "")]

    fake_llm.responder = by_symbol
    log = (tmp_path / "agent-a.log").open("wb")
    first = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", "agent"],
        env={**os.environ, **env, "PYTHONPATH": f"{REPO / 'libs'}{os.pathsep}{REPO}"},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    nc = await nats.connect(own_nats.url)
    outputs = Outputs()
    await outputs.subscribe(nc)
    host: ServiceHost | None = None
    try:
        bus = Bus(nc.jetstream(), "test")
        btc, eth = order(at), order(at, symbol="KRW-ETH")
        await bus.publish(btc, run_id="live")
        await bus.publish(eth, run_id="live")
        await fake_llm.wait_for_requests(1, timeout=60)  # the first agent is mid-call on BTC

        first.kill()
        first.wait(timeout=10)
        held.release()  # the answer the first agent never got

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        host = ServiceHost(["agent"], CommonSettings(), serve_http=False)
        await host.start()
        await wait_for(lambda: len(outputs.of(AiDecision)) == 2 and len(outputs.messages) == 4, timeout=30)

        assert {(d.order_id, d.decision) for d in outputs.of(AiDecision)} == {
            (btc.order_id, AiVerdict.CONFIRM),
            (eth.order_id, AiVerdict.REJECT),
        }
        assert [a.order_id for a in outputs.of(OrderApproved)] == [btc.order_id]
        assert [r.order_id for r in outputs.of(OrderRejected)] == [eth.order_id]
        assert fake_llm.count() == 4  # the killed call, then BTC (2) and ETH (1) once each
        assert await subject_counts(nc, "AI", "ai.decisions.>") == {
            "ai.decisions.KRW-BTC": 1,
            "ai.decisions.KRW-ETH": 1,
        }
        async with agent_db.session() as session:
            stored = await session.execute(
                select(AgentDecision.order_id, func.count())
                .where(AgentDecision.order_id.in_([btc.order_id, eth.order_id]))
                .group_by(AgentDecision.order_id)
            )
            assert dict(stored.all()) == {btc.order_id: 1, eth.order_id: 1}
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
        await nc.close()
        if host is not None:
            await host.stop()
