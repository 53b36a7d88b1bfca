"""A real pipeline for the strategy and risk integration tests: NATS, PostgreSQL, Redis, services.

Strategy, risk and the executor run as real services (``ServiceHost``, each restartable on its
own); the agent's place is taken by :func:`approver`, a plug-in service that approves every
proposed BUY as it is, recording its CONFIRM as the agent does (the agent has its own tests, and
its review depends on hourly context these tests do not build). Tests publish indicator snapshots
or signals under a run id of their own, wait until every durable consumer has drained, and read
what each stream stored for that run. The candle a published snapshot or signal was made from is
recorded in ``market_data`` first, as the collector's recorder would (the executor quotes from
it), and removed when the pipeline closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from apps.host import ServiceHost
from coinpilot.bus import Bus, ensure_streams, stream_for_subject
from coinpilot.bus import headers as h
from coinpilot.cache import Cache, keys
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import (
    Contract,
    DeadLetter,
    EntrySignal,
    ExitSignal,
    Fill,
    IndicatorSnapshot,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectStage,
    RiskAlert,
    Side,
)
from coinpilot.db import Database, upgrade
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from coinpilot.settings import CommonSettings
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess

APPROVER = "tests.integration.risk.harness:approver"
_runs = itertools.count(1)

CONTRACT_OF_STREAM: dict[str, tuple[tuple[str, type[Contract]], ...]] = {
    "SIGNALS": (("signals.entry.", EntrySignal), ("signals.exit.", ExitSignal)),
    "ORDERS": (
        ("orders.proposed.", OrderProposed),
        ("orders.approved.", OrderApproved),
        ("orders.rejected.", OrderRejected),
    ),
    "FILLS": (("fills.", Fill),),
    "RISK": (("risk.alerts", RiskAlert),),
    "DLQ": (("dlq.", DeadLetter),),
}


def approver(rt: Runtime) -> ServiceDefinition:
    """Stands in for the agent: every proposed BUY is approved unchanged."""

    async def approve(d: Delivery[OrderProposed]) -> Sequence[Contract]:
        p = d.message
        assert rt.db is not None
        async with rt.db.transaction() as conn:  # the agent's verdict, which the executor checks
            await conn.execute(
                "INSERT INTO agent_decisions (run_id, order_id, symbol, decision, ts_event)"
                " VALUES ($1, $2, $3, 'CONFIRM', $4) ON CONFLICT DO NOTHING",
                d.run_id,
                p.order_id,
                p.symbol,
                p.ts_event,
            )
        return [
            OrderApproved(
                ts_event=p.ts_event,
                order_id=p.order_id,
                symbol=p.symbol,
                side=Side.BUY,
                reference_price=p.reference_price,
                amount=p.amount,
                regime=p.regime,
                approved_by=RejectStage.AGENT,
                signal=p.signal,
            )
        ]

    return ServiceDefinition(
        name="approver",
        consumers=[Consumer("orders.proposed.*", "test-approver", approve, parser_for(OrderProposed))],
    )


def new_run_id(prefix: str) -> str:
    """Unique across sessions too: the machine Redis keeps keys between test sessions."""
    return f"{prefix}-{next(_runs)}-{uuid.uuid4().hex[:8]}"


@dataclass
class Pipeline:
    """The running services of one test and the run id its messages carry."""

    nats_url: str
    settings: CommonSettings
    js: JetStreamContext
    run_id: str
    hosts: dict[str, ServiceHost] = field(default_factory=dict)
    recorded: Approvals | None = None

    async def start(self, *groups: str) -> None:
        """Start hosts by group name: ``strategy``, ``risk`` or ``ledger`` (executor + approver)."""
        for group in groups:
            names = ["executor", APPROVER] if group == "ledger" else [group]
            host = ServiceHost(names, self.settings, serve_http=False)
            await host.start()
            self.hosts[group] = host

    async def stop(self, group: str) -> None:
        await self.hosts.pop(group).stop()

    async def restart(self, group: str) -> None:
        await self.stop(group)
        await self.start(group)

    async def close(self) -> None:
        """Stop every host, remove the run's Redis keys (``run:<run_id>:*``) and the candles it
        recorded."""
        for group in list(self.hosts):
            await self.stop(group)
        if self.recorded is not None:
            await self.recorded.restore()
            await self.recorded.db.dispose()
        if self.settings.redis_url:
            cache = Cache(self.settings.redis_url)
            with contextlib.suppress(RedisError):
                stale = [key async for key in cache.client.scan_iter(match=f"{keys.namespace(self.run_id)}*")]
                if stale:
                    await cache.client.delete(*stale)
            await cache.close()

    async def record_candle(self, message: Contract) -> None:
        """The 1m candle ``message`` was made from, into ``market_data`` (the recorder's job)."""
        snapshot = message if isinstance(message, IndicatorSnapshot) else getattr(message, "snapshot", None)
        if not isinstance(snapshot, IndicatorSnapshot) or self.settings.database_url is None:
            return
        if self.recorded is None:
            self.recorded = Approvals(Database(self.settings.database_url.get_secret_value()))
        candle = snapshot.candle
        await self.recorded.candle(candle.symbol, candle.ts_open, candle.close)

    async def publish(self, *messages: Contract) -> None:
        bus = Bus(self.js, "test")
        for message in messages:
            await self.record_candle(message)
            await bus.publish(message, run_id=self.run_id)

    async def publish_copy(self, message: Contract, copy: int = 1) -> None:
        """``message`` again under another ``Nats-Msg-Id``: a duplicate JetStream cannot recognise."""
        await self.record_candle(message)
        headers = h.build_headers(
            msg_id=f"{message.msg_id()}#copy{copy}",
            run_id=self.run_id,
            trace_id=f"copy-{copy}",
            ts_event=message.ts_event,
            published_at=wall_clock_now(),
            schema=f"{type(message).__name__}/v1",
        )
        await Bus(self.js, "test").publish_raw(message.subject(), message.to_json(), headers)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until no durable has pending or unacked messages and no stream grew meanwhile.

        Reading consumers stream by stream is not atomic: a handler may publish into a stream
        already read as empty and ack its input before that input's stream is read. The stream
        sequences taken before and after the reading expose exactly that case.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            before = await self._sequences()
            if await self._backlog() == 0 and await self._sequences() == before:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"pipeline of {self.run_id} not drained after {timeout:.0f}s")
            await asyncio.sleep(0.005)

    async def _backlog(self) -> int:
        """Pending plus unacked messages of the durables of the running hosts."""
        total = 0
        for host in self.hosts.values():
            for definition in host.definitions:
                for consumer in definition.consumers:
                    stream = stream_for_subject(consumer.subject).name
                    info = await self.js.consumer_info(stream, consumer.durable)
                    total += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return total

    async def _sequences(self) -> tuple[int, ...]:
        return tuple(info.state.last_seq for info in await self.js.streams_info())

    async def step(self, *messages: Contract) -> None:
        """Publish and wait until the whole pipeline has handled everything that followed."""
        await self.publish(*messages)
        await self.drain()

    async def stored(self, stream: str) -> list[Contract]:
        """Every message of this run stored in ``stream``, in stream order, parsed."""
        info = await self.js.stream_info(stream)
        out: list[Contract] = []
        if not info.state.messages:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await self.js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            if (msg.headers or {}).get(h.RUN_ID) != self.run_id:
                continue
            for prefix, contract in CONTRACT_OF_STREAM[stream]:
                if msg.subject.startswith(prefix):
                    out.append(contract.from_json(msg.data))
        return out

    async def of_type(self, stream: str, kind: type[Contract]) -> list[Contract]:
        return [m for m in await self.stored(stream) if isinstance(m, kind)]


def pipeline_settings(
    nats_url: str, pg_url: str, redis_url: str | None, config: Path | None
) -> CommonSettings:
    return CommonSettings(
        nats_url=nats_url,
        database_url=pg_url,
        redis_url=redis_url,
        strategy_config=config,
        ack_wait_seconds=5.0,
        pull_batch_size=1,
        http_port=0,
        max_deliver=3,
    )


async def open_pipeline(
    nats_server: NatsProcess, pg_url: str, redis_url: str | None, prefix: str, config: Path | None = None
) -> tuple[Pipeline, Client]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    settings = pipeline_settings(nats_server.url, pg_url, redis_url, config)
    return Pipeline(nats_server.url, settings, js, new_run_id(prefix)), nc


@pytest.fixture(scope="session")
async def migrated_db(pg_url: str) -> AsyncIterator[Database]:
    await upgrade(pg_url)
    db = Database(pg_url)
    yield db
    await db.dispose()


@pytest.fixture(scope="module")
def pipeline_nats() -> Iterator[NatsProcess]:
    """A private NATS per test module: durables and streams of these tests only."""
    server = NatsProcess()
    server.start()
    yield server
    server.close()
