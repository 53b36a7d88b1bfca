"""Two notifier replicas on shared durables (issue 21: the notifier scales freely, per event).

Two ``coinpilot run notifier`` processes, each its own member id and metrics port, share the
notifier's durables on a private NATS and one PostgreSQL, and post to the fake Discord and n8n.
A burst of fills and risk alerts:

* both replicas deliver, and every event reaches each sink exactly once (one 2xx request, one
  ``notification_sent`` claim), nothing dead-lettered;
* with the replica that is mid-post killed by SIGKILL after Discord took the message in but before
  its answer was read, the other replica delivers that event again after the ack wait: the
  guarantee is **at least once**. The only second posts are of the events the killed replica had
  in flight (at most one per consumer: its fills and its alerts are handled concurrently), each
  posted at most twice with the same ``Idempotency-Key`` (the event key), so a receiver that keeps
  the key sees every event once. Every other event is posted exactly once per sink;
* two replicas' report clocks reaching the same 22:00 KST boundary at once publish one report.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import func, select

from coinpilot.bus import Bus
from coinpilot.contracts import Contract, DailyReport
from coinpilot.db import Database, NotificationSent
from services.notifier.core import ReportSchedule
from services.notifier.daily_report_job import ReportClock
from tests.integration.notifier.test_daily_report import at, trade
from tests.support.fake_webhooks import FakeDiscord, FakeN8n, Misbehave, Received
from tests.support.replicas import Replica, holder, start_replica
from tests.support.servers import NatsProcess, isolated_nats, wait_for
from tests.unit.notifier.factories import T0, buy_fill, risk_alert

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.timeout(180)]
DURABLES = (("FILLS", "notifier-fills"), ("RISK", "notifier-risk"))


@pytest.fixture
async def own_nats() -> AsyncIterator[NatsProcess]:
    """A NATS of this test alone: the replicas' durables see no other test's events."""
    async with isolated_nats() as server:
        yield server


@pytest.fixture
async def js(own_nats: NatsProcess) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(own_nats.url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def replicas(
    own_nats: NatsProcess,
    notifier_db: Database,
    pg_url: str,
    discord: FakeDiscord,
    n8n: FakeN8n,
    tmp_path: Path,
) -> AsyncIterator[list[Replica]]:
    env = {
        "COINPILOT_NATS_URL": own_nats.url,
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_REDIS_URL": "",
        "COINPILOT_PULL_BATCH_SIZE": "1",
        "COINPILOT_ACK_WAIT_SECONDS": "6",
        "COINPILOT_DISCORD_WEBHOOK_URL": discord.webhook_url,
        "COINPILOT_N8N_URL": n8n.base_url,
        "COINPILOT_N8N_WEBHOOK_SECRET": n8n.secret,
        "COINPILOT_NOTIFIER_DELIVER_REPLAYS": "true",
        "COINPILOT_NOTIFIER_BACKOFF_BASE_SECONDS": "0.01",
        "COINPILOT_NOTIFIER_REQUEST_TIMEOUT_SECONDS": "30",  # the held post must outlive the kill
        "COINPILOT_OPENAI_API_KEY": "",
        "OPENAI_API_KEY": "",
    }
    started = [start_replica("notifier", i, env, tmp_path / "logs") for i in (1, 2)]
    try:
        await asyncio.gather(*(r.ready() for r in started))
        yield started
    finally:
        for r in started:
            r.stop()
        discord.release_holds()


def burst() -> list[Contract]:
    fills: list[Contract] = [
        buy_fill(f"KRW-BTC:2026-03-02T01:{i:02d}Z:buy", T0 + timedelta(minutes=i)) for i in range(12)
    ]
    alerts: list[Contract] = [
        risk_alert().model_copy(update={"ts_event": T0 + timedelta(minutes=i)}) for i in range(4)
    ]
    return fills + alerts


async def publish(js: JetStreamContext, events: list[Contract], run_id: str) -> list[str]:
    """Publish the events; returns their event keys (``<run id>:<msg id>``)."""
    bus = Bus(js, "test")
    for event in events:
        await bus.publish(event, run_id=run_id)
    return [f"{run_id}:{event.msg_id()}" for event in events]


def posted(server: FakeDiscord | FakeN8n) -> Counter[str]:
    """2xx requests per ``Idempotency-Key``."""
    return Counter(r.headers["idempotency-key"] for r in server.received if 200 <= r.answered < 300)


async def drained(js: JetStreamContext) -> bool:
    for stream, durable in DURABLES:
        info = await js.consumer_info(stream, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def claims(db: Database, event_keys: list[str]) -> Counter[str]:
    async with db.session() as s:
        rows = await s.execute(
            select(NotificationSent.sink, func.count())
            .where(NotificationSent.event_key.in_(event_keys))
            .group_by(NotificationSent.sink)
        )
        return Counter(dict(rows.all()))


async def dead_letters(js: JetStreamContext) -> int:
    return (await js.stream_info("DLQ")).state.messages


async def test_two_replicas_post_each_event_of_a_burst_once_to_each_sink(
    replicas: list[Replica],
    js: JetStreamContext,
    notifier_db: Database,
    discord: FakeDiscord,
    n8n: FakeN8n,
    run_id: str,
) -> None:
    keys = await publish(js, burst(), run_id)
    await wait_for(lambda: len(posted(discord)) == len(keys) and len(posted(n8n)) == len(keys), timeout=60)
    await wait_for(lambda: drained(js), timeout=30)
    assert posted(discord) == Counter(keys) and posted(n8n) == Counter(keys)  # once each
    assert len(discord.received) == len(n8n.received) == len(keys)
    assert await claims(notifier_db, keys) == Counter({"discord": len(keys), "n8n": len(keys)})
    assert await dead_letters(js) == 0
    shares = [await r.metric("coinpilot_notifier_deliveries_total", status="sent") for r in replicas]
    print(f"posts per replica: {shares}")
    assert sum(shares) == 2 * len(keys) and all(share > 0 for share in shares)


async def test_a_replica_killed_mid_post_leaves_every_event_delivered_and_only_that_one_twice(
    replicas: list[Replica],
    js: JetStreamContext,
    notifier_db: Database,
    discord: FakeDiscord,
    n8n: FakeN8n,
    run_id: str,
) -> None:
    discord.script(Misbehave.hold())  # Discord takes the first post in, the answer waits
    keys = await publish(js, burst(), run_id)
    await discord.wait_for_requests(1, timeout=30)
    held: Received = discord.received[0]
    victim = holder(replicas, held.client_port)
    victim.kill()
    print(f"killed {victim.name} mid-post; {len(posted(discord))} events posted to Discord by then")
    discord.release_holds()

    await wait_for(lambda: len(posted(discord)) == len(keys) and len(posted(n8n)) == len(keys), timeout=60)
    await wait_for(lambda: drained(js), timeout=30)
    for name, sink in {"discord": discord, "n8n": n8n}.items():
        assert set(posted(sink)) == set(keys)  # nothing lost
        twice = posted(sink) - Counter(keys)
        print(f"{name}: posted twice {sorted(twice)}")
        assert set(twice.values()) <= {1}  # never more than twice
        # only what the killed replica had in flight: at most one event per consumer (fills, alerts)
        assert len({key.split(":")[1] for key in twice}) == len(twice) <= len(DURABLES)
    assert held.headers["idempotency-key"] in posted(discord) - Counter(keys)
    assert await claims(notifier_db, keys) == Counter({"discord": len(keys), "n8n": len(keys)})
    assert await dead_letters(js) == 0


async def test_two_replicas_reaching_the_same_report_boundary_at_once_publish_it_once(
    notifier_db: Database, run_id: str
) -> None:
    """Each replica's clock sees 22:00 KST at the same moment; the ``job_runs`` claim (held by the
    transaction that builds and publishes the report) lets one of them through."""
    await trade(notifier_db, run_id)
    published: list[DailyReport] = []

    async def publish(report: DailyReport, run: str) -> None:
        published.append(report)

    clocks = [ReportClock(notifier_db, ReportSchedule(), None, publish, "KRW") for _ in range(2)]
    for clock in clocks:
        clock.observe(run_id, at(2, 13, 0))
    results = await asyncio.gather(*(clock.check() for clock in clocks))
    assert sorted(len(r) for r in results) == [0, 1]
    assert [r.report_date for r in published] == [date(2026, 3, 2)]
