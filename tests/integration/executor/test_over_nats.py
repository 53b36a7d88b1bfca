"""The executor as a service on a real NATS + PostgreSQL: duplicates, replicas, a crash before the ack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from nats.js import JetStreamContext
from sqlalchemy import func, select

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract, Fill, OrderRejected, RejectReason
from coinpilot.db import Database, TradingHistory
from coinpilot.settings import CommonSettings
from services.executor.app import DURABLE, execute_order
from services.executor.core import FillParams
from services.executor.venue import PaperVenue
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess, wait_for
from tests.unit.executor.factories import buy_order, sell_order

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
D = Decimal


@pytest.fixture
async def clean_streams(js: JetStreamContext) -> AsyncIterator[JetStreamContext]:
    for stream in ("ORDERS", "FILLS", "DLQ"):
        await js.purge_stream(stream)
    yield js


def settings(nats: NatsProcess, pg_url: str) -> CommonSettings:
    return CommonSettings(
        nats_url=nats.url,
        database_url=pg_url,
        redis_url=None,
        ack_wait_seconds=1.0,
        pull_batch_size=1,
        http_port=0,
    )


async def start_executor(nats: NatsProcess, pg_url: str) -> ServiceHost:
    host = ServiceHost(["executor"], settings(nats, pg_url), serve_http=False)
    await host.start()
    return host


async def publish_copy(js: JetStreamContext, msg: Contract, run_id: str, copy: int) -> None:
    """A duplicate JetStream cannot recognise (another Nats-Msg-Id), as from a producer retrying late."""
    headers = h.build_headers(
        msg_id=f"{msg.msg_id()}#{copy}",
        run_id=run_id,
        trace_id=f"trace-{copy}",
        ts_event=msg.ts_event,
        published_at=wall_clock_now(),
        schema="OrderApproved/v1",
    )
    await Bus(js, "test").publish_raw(msg.subject(), msg.to_json(), headers)


async def stored(js: JetStreamContext, stream: str, run_id: str, subject: str = "") -> list[bytes]:
    """Bodies of the messages of ``run_id`` stored in ``stream`` (under a subject prefix)."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        if (msg.headers or {}).get(h.RUN_ID) == run_id and msg.subject.startswith(subject):
            out.append(msg.data)
    return out


async def drained(js: JetStreamContext) -> bool:
    info = await js.consumer_info("ORDERS", DURABLE)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def rows(db: Database, run_id: str) -> int:
    async with db.session() as s:
        return (
            await s.execute(
                select(func.count()).select_from(TradingHistory).where(TradingHistory.run_id == run_id)
            )
        ).scalar_one()


async def test_three_copies_across_two_replicas_make_one_fill_and_one_message(
    clean_streams: JetStreamContext,
    executor_nats: NatsProcess,
    executor_db: Database,
    approvals: Approvals,
    pg_url: str,
    run_id: str,
) -> None:
    js = clean_streams
    replicas = [await start_executor(executor_nats, pg_url) for _ in range(2)]
    try:
        order = buy_order("100000000", "1000000")
        await approvals.approve(run_id, order)
        for copy in range(3):
            await publish_copy(js, order, run_id, copy)
        await wait_for(lambda: drained(js), timeout=20)
    finally:
        for host in replicas:
            await host.stop()
    assert await rows(executor_db, run_id) == 1
    fills = [Fill.from_json(body) for body in await stored(js, "FILLS", run_id)]
    assert [(f.order_id, f.quantity, f.fee) for f in fills] == [(order.order_id, D("0.01"), D("500"))]


async def test_a_crash_between_commit_and_ack_still_publishes_the_fill_once(
    clean_streams: JetStreamContext,
    executor_nats: NatsProcess,
    executor_db: Database,
    approvals: Approvals,
    pg_url: str,
    run_id: str,
) -> None:
    js = clean_streams
    await (await start_executor(executor_nats, pg_url)).stop()  # the durable exists, nobody consumes
    order = buy_order("100000000", "1000000")
    await approvals.approve(run_id, order)
    await Bus(js, "test").publish(order, run_id=run_id)

    # a replica takes the order, commits the fill and dies before publishing or acking
    sub = await js.pull_subscribe_bind(durable=DURABLE, stream="ORDERS")
    (taken,) = await sub.fetch(1, timeout=10)
    committed = await execute_order(
        executor_db,
        PaperVenue(FillParams()),
        order,
        run_id=run_id,
        trace_id=None,
        initial_balance=D(10_000_000),
    )
    await sub.unsubscribe()
    assert taken.metadata.num_delivered == 1 and await stored(js, "FILLS", run_id) == []

    host = await start_executor(executor_nats, pg_url)
    try:
        published = await wait_for(lambda: stored(js, "FILLS", run_id), timeout=20)
        await wait_for(lambda: drained(js), timeout=20)
    finally:
        await host.stop()
    assert published == [committed.to_json()]
    assert await rows(executor_db, run_id) == 1


async def test_an_order_that_cannot_be_filled_is_answered_on_orders_rejected(
    clean_streams: JetStreamContext,
    executor_nats: NatsProcess,
    executor_db: Database,
    approvals: Approvals,
    pg_url: str,
    run_id: str,
) -> None:
    js = clean_streams
    order = sell_order(
        "100000000",
        opened_by="KRW-BTC:2026-03-02T01:00Z:buy",
        quantity="1",
        avg_price="1",
        high_water_mark="1",
    )
    await approvals.approve(run_id, order)  # a genuine exit: risk approved it
    host = await start_executor(executor_nats, pg_url)
    try:
        await Bus(js, "test").publish(order, run_id=run_id)
        await wait_for(lambda: drained(js), timeout=20)
    finally:
        await host.stop()
    answers = [
        OrderRejected.from_json(b) for b in await stored(js, "ORDERS", run_id) if b"EXECUTOR" in b.upper()
    ]
    assert [(a.order_id, a.stage, a.reason) for a in answers] == [
        (order.order_id, "executor", RejectReason.NO_POSITION)
    ]
