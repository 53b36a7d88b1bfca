"""kill -9 of the live executor between sending an order and recording the answer (issue 23).

The executor runs as its own process (``coinpilot run executor``, venue ``upbit``) against the
local fake exchange, which books the order and then never answers. The process is SIGKILLed while
it waits; a second one gets the order again (JetStream redelivers what was never acked), finds the
``intended`` row, looks the order up by identifier and books it: one order on the exchange, one
fill in the ledger, one ``Fill`` published.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy

from coinpilot.bus import Bus
from coinpilot.contracts import Fill
from coinpilot.db import Database
from services.executor.live import store
from services.executor.live.states import VenueState, identifier_for
from tests.support.fake_upbit import FakeUpbit
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess, free_port, wait_for
from tests.unit.executor.factories import buy_order

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[3]
D = Decimal
BTC = "KRW-BTC"
START = D(10_000_000)


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpbit]:
    async with FakeUpbit() as exchange:
        exchange.add_market(BTC, tick_size=1000)
        exchange.set_balance("KRW", START)
        exchange.set_book(BTC, asks=[("100000000", "1")])
        yield exchange


def start_executor(
    nats_url: str, pg_url: str, fake: FakeUpbit, run_id: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'libs'}{os.pathsep}{REPO}",
        "COINPILOT_NATS_URL": nats_url,
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_REDIS_URL": "",
        "COINPILOT_RUN_ID": run_id,
        "COINPILOT_HTTP_HOST": "127.0.0.1",
        "COINPILOT_HTTP_PORT": str(port),
        "COINPILOT_LOG_LEVEL": "DEBUG",
        "COINPILOT_PULL_BATCH_SIZE": "1",
        "COINPILOT_ACK_WAIT_SECONDS": "2",
        "COINPILOT_EXECUTOR_INITIAL_BALANCE": str(START),
        "COINPILOT_EXECUTOR_VENUE": "upbit",
        "COINPILOT_LIVE_TRADING": "true",
        "COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY": fake.access_key,
        "COINPILOT_EXECUTOR_UPBIT_SECRET_KEY": fake.secret_key,
        "COINPILOT_EXECUTOR_UPBIT_BASE_URL": fake.url,
        "COINPILOT_EXECUTOR_UPBIT_TIMEOUT_SECONDS": "120",  # it waits for the answer until it is killed
        "COINPILOT_EXECUTOR_POLL_INTERVAL_SECONDS": "0.05",
        "COINPILOT_EXECUTOR_MAX_ORDER_KRW": "2000000",
        "COINPILOT_EXECUTOR_MAX_DAILY_KRW": "1000000000000",  # every venue order of the session counts
    }
    out = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", "executor"], env=env, cwd=REPO, stdout=out, stderr=out
    )
    return proc, port


async def ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the executor exited with {proc.returncode}")
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def published_fills(js, order_id: str) -> list[Fill]:  # type: ignore[no-untyped-def]
    sub = await js.subscribe(f"fills.{BTC}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    found: list[Fill] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except NatsTimeout:
                break
            fill = Fill.from_json(msg.data)
            if fill.order_id == order_id:
                found.append(fill)
    finally:
        await sub.unsubscribe()
    return found


async def row_state(db: Database, run_id: str, order_id: str) -> VenueState | None:
    row = await store.fetch(db, run_id, order_id)
    return None if row is None else row.state


async def test_kill_9_between_sending_and_recording_books_the_order_once(
    executor_nats: NatsProcess, pg_url: str, executor_db: Database, approvals: Approvals, fake: FakeUpbit,
    tmp_path: Path,
) -> None:  # fmt: skip
    run_id = "live-kill9"
    order = buy_order("100000000", "1000000")
    await approvals.approve(run_id, order)
    fake.accept_then_hang()
    nc = await nats.connect(executor_nats.url)
    js = nc.jetstream()
    log = tmp_path / "executor.log"

    first, port = start_executor(executor_nats.url, pg_url, fake, run_id, log)
    try:
        await wait_for(lambda: ready(first, port), timeout=60)
        await Bus(js, "test").publish(order, run_id=run_id)
        # the order reached the exchange and was booked there; its answer never comes
        await wait_for(lambda: len(fake.orders) == 1, timeout=30)
        assert await row_state(executor_db, run_id, order.order_id) is VenueState.INTENDED
    finally:
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    assert first.returncode == -signal.SIGKILL
    assert await published_fills(js, order.order_id) == []

    second, port = start_executor(executor_nats.url, pg_url, fake, run_id, log)
    try:
        await wait_for(lambda: ready(second, port), timeout=60)
        await wait_for(lambda: _is_done(executor_db, run_id, order.order_id), timeout=30)
        await wait_for(lambda: _settled(js), timeout=30)  # acked, nothing left to deliver
        fills = await published_fills(js, order.order_id)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
    await nc.close()

    assert len(fills) == 1 and fills[0].quantity == D("0.01")
    assert len(fake.orders_by_identifier(identifier_for(run_id, order.order_id))) == 1
    assert fake.count("POST", "/v1/orders") == 1
    async with executor_db.transaction() as conn:
        booked = await conn.fetchval("SELECT count(*) FROM trading_history WHERE run_id = $1", run_id)
        cash = await conn.fetchval(
            "SELECT balance FROM account_state WHERE run_id = $1 AND currency = 'KRW'", run_id
        )
    assert booked == 1
    assert cash == fake.holding("KRW").balance == fills[0].balance_after
    text = log.read_text(errors="replace")
    assert "venue order" in text  # the process logged its orders (at DEBUG, requests too)
    # start-up reconciliation: the first found the ledger (opened with the account's KRW) equal to
    # the exchange; the restarted one waited for the order in flight
    assert "ledger equals the exchange" in text and "ledger differs" not in text
    assert "reconciliation deferred: 1 live order(s) not settled" in text
    for secret in (fake.access_key, fake.secret_key, *fake.tokens_seen):
        assert secret not in text


async def _is_done(db: Database, run_id: str, order_id: str) -> bool:
    return await row_state(db, run_id, order_id) is VenueState.DONE


async def _settled(js) -> bool:  # type: ignore[no-untyped-def]
    info = await js.consumer_info("ORDERS", "executor-orders")
    return info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.stream_seq >= 1
