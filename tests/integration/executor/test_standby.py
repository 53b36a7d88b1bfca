"""Hot standby of the executor (COINPILOT_STANDBY): two processes, one lease, kill -9 of the active.

Both processes run ``coinpilot run executor`` (paper venue) against one NATS and one PostgreSQL.
One holds the lease and books orders; the other is connected, ``/readyz`` says ``standby``. A run
of orders is booked without a fault (the reference); a second run of the same orders has the
active killed -9 while orders are waiting: the standby takes over within the lease bound and the
ledger, the account and the published fills equal the reference's: nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy

from coinpilot.bus import Bus
from coinpilot.bus.headers import RUN_ID
from coinpilot.contracts import Fill, OrderApproved
from coinpilot.db import Database
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess, free_port, wait_for
from tests.unit.executor.factories import T0, buy_order

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[3]
LEASE, BEAT = 3.0, 0.5  # takeover bound: LEASE + 2 * BEAT, plus the consumer's reset and start


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int


def start_replica(name: str, nats_url: str, pg_url: str, log: Path) -> Replica:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'libs'}{os.pathsep}{REPO}",
        "COINPILOT_NATS_URL": nats_url,
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_REDIS_URL": "",
        "COINPILOT_HTTP_HOST": "127.0.0.1",
        "COINPILOT_HTTP_PORT": str(port),
        "COINPILOT_LOG_LEVEL": "INFO",
        "COINPILOT_PULL_BATCH_SIZE": "1",
        "COINPILOT_ACK_WAIT_SECONDS": "60",  # longer than the test: only the takeover's reset redelivers
        "COINPILOT_STANDBY": "true",
        "COINPILOT_MEMBER_ID": name,
        "COINPILOT_PARTITION_LEASE_SECONDS": str(LEASE),
        "COINPILOT_PARTITION_HEARTBEAT_SECONDS": str(BEAT),
    }
    out = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", "executor"], env=env, cwd=REPO, stdout=out, stderr=out
    )
    return Replica(name, proc, port)


async def role(replica: Replica) -> str | None:
    """``active``/``standby`` from a ready replica's ``/readyz``; None while it is not ready."""
    if replica.proc.poll() is not None:
        return None
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(f"http://127.0.0.1:{replica.port}/readyz")
    except httpx.TransportError:
        return None
    return response.json().get("role") if response.status_code == 200 else None


def orders(count: int) -> list[OrderApproved]:
    """Buys of distinct symbols (one position each), one minute apart."""
    return [
        buy_order("1000000", str(100000 + 1000 * i), symbol=f"KRW-T{i:02d}", at=T0 + timedelta(minutes=i))
        for i in range(count)
    ]


async def ledger(db: Database, run_id: str) -> list[tuple[object, ...]]:
    async with db.transaction() as conn:
        rows = await conn.fetch(
            "SELECT order_id, symbol, side, price, quantity, amount, fee FROM trading_history "
            "WHERE run_id = $1 ORDER BY executed_at, order_id",
            run_id,
        )
        accounts = await conn.fetch(
            "SELECT currency, balance FROM account_state WHERE run_id = $1 ORDER BY currency", run_id
        )
    return [tuple(r) for r in rows] + [tuple(a) for a in accounts]


async def booked(db: Database, run_id: str) -> int:
    async with db.transaction() as conn:
        return await conn.fetchval("SELECT count(*) FROM trading_history WHERE run_id = $1", run_id)


async def fills_of(js, run_id: str) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """The published fills of a run (order id, balance after), in stream order."""
    sub = await js.subscribe("fills.*", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    found: list[tuple[str, object]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except NatsTimeout:
                break
            if (msg.headers or {}).get(RUN_ID) == run_id:
                fill = Fill.from_json(msg.data)
                found.append((fill.order_id, fill.balance_after))
    finally:
        await sub.unsubscribe()
    return found


async def settled(js) -> bool:  # type: ignore[no-untyped-def]
    info = await js.consumer_info("ORDERS", "executor-orders")
    return info.num_ack_pending == 0 and info.num_pending == 0


async def run_orders(js, approvals: Approvals, run_id: str, batch: list[OrderApproved]) -> None:  # type: ignore[no-untyped-def]
    bus = Bus(js, "test")
    for order in batch:
        await approvals.approve(run_id, order)
        await bus.publish(order, run_id=run_id)


def stop(replica: Replica) -> None:
    if replica.proc.poll() is None:
        replica.proc.send_signal(signal.SIGTERM)
        try:
            replica.proc.wait(30)
        except subprocess.TimeoutExpired:
            replica.proc.kill()


async def test_the_standby_takes_over_after_kill_9_and_books_what_the_active_left(
    executor_nats: NatsProcess, pg_url: str, executor_db: Database, approvals: Approvals, tmp_path: Path
) -> None:
    nc = await nats.connect(executor_nats.url)
    js = nc.jetstream()
    batch = orders(16)
    a = start_replica("exec-a", executor_nats.url, pg_url, tmp_path / "a.log")
    await wait_for(lambda: _is(role(a), "active"), timeout=60)
    b = start_replica("exec-b", executor_nats.url, pg_url, tmp_path / "b.log")
    replicas = [a, b]
    try:
        await wait_for(lambda: _is(role(b), "standby"), timeout=60)

        # the reference: no fault
        await run_orders(js, approvals, "standby-ref", batch)
        await wait_for(lambda: _equals(booked(executor_db, "standby-ref"), len(batch)), timeout=60)
        await wait_for(lambda: settled(js), timeout=30)
        assert await role(b) == "standby"

        # the same orders under another run id; the active dies with orders waiting
        run_id = "standby-kill"
        await run_orders(js, approvals, run_id, batch[:10])
        await wait_for(lambda: _at_least(booked(executor_db, run_id), 3), timeout=60)
        a.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(a.proc.wait, 10)
        await run_orders(js, approvals, run_id, batch[10:])
        await wait_for(lambda: _is(role(b), "active"), timeout=30)
        took = time.monotonic() - killed_at
        assert took <= LEASE + 2 * BEAT + 5  # the configured bound plus the takeover's own start
        await wait_for(lambda: _equals(booked(executor_db, run_id), len(batch)), timeout=60)
        await wait_for(lambda: settled(js), timeout=30)

        # a replacement joins as the standby
        c = start_replica("exec-c", executor_nats.url, pg_url, tmp_path / "c.log")
        replicas.append(c)
        await wait_for(lambda: _is(role(c), "standby"), timeout=60)
        assert await role(b) == "active"

        reference, after_kill = await ledger(executor_db, "standby-ref"), await ledger(executor_db, run_id)
        ref_fills, kill_fills = await fills_of(js, "standby-ref"), await fills_of(js, run_id)
    finally:
        for replica in replicas:
            stop(replica)
        await nc.close()

    assert len(reference) > len(batch)  # the orders and the account
    assert after_kill == reference
    assert [o for o, _ in ref_fills] == [o.order_id for o in batch]
    assert kill_fills == ref_fills  # each order's fill once, in order, the same balances
    assert "is now the active one" in (tmp_path / "b.log").read_text(errors="replace")
    b_log = (tmp_path / "b.log").read_text(errors="replace")
    assert "Traceback" not in b_log, b_log[-3000:]


async def _is(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return (await value) == expected


async def _equals(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return (await value) == expected


async def _at_least(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return (await value) >= expected
