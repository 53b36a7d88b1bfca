"""Kill -9 every service once during a lockstep replay: the ledger is still the backtest's.

Each of the seven services is killed with SIGKILL at its own point of the replay and started
again; the executor is killed the instant an order it must fill is approved, i.e. while that
order is in flight. Lockstep waits for the restarted service to drain its backlog (a killed
consumer's un-acked message comes back after the ack wait), and idempotent handlers make the
redeliveries harmless: the final ledger equals the fault-free backtest's, nothing lost, nothing
twice, and no message was dead-lettered.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import nats
import pytest

from apps.backtest.run import Window, run_backtest
from apps.demo import (
    ServiceProcess,
    sample_files,
    split_warmup,
    start_service,
    stop_services,
    wait_ready,
)
from coinpilot.bus import ensure_streams
from coinpilot.candle_files import load_candles
from coinpilot.contracts import OrderApproved, Side
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.runtime import SERVICES
from tests.e2e.test_parity import canonical, distributed_ledger

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REPLAY_HOURS = 36.0
FAST_REDELIVERY = {"COINPILOT_ACK_WAIT_SECONDS": "2"}


class Chaos:
    """Restarts services it killed; remembers what it did."""

    def __init__(self, stack: EmbeddedStack, workdir: Path, services: list[ServiceProcess]) -> None:
        self.stack, self.workdir = stack, workdir
        self.services = {s.name: s for s in services}
        self.killed: list[str] = []

    async def kill_and_restart(self, name: str) -> None:
        old = self.services[name]
        old.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(old.proc.wait)
        self.killed.append(name)
        new = start_service(name, self.stack, self.workdir, old.port, FAST_REDELIVERY)
        self.services[name] = new
        await wait_ready([new])


async def test_killing_each_service_once_changes_nothing_in_the_ledger(
    nats_url: str, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    warm, replay = split_warmup(load_candles(sample_files()), REPLAY_HOURS)
    run_id = f"faults-{uuid.uuid4().hex[:8]}"
    backtest, _ = await run_backtest(Window(warm, replay), run_id=run_id)
    expected = sorted(backtest.fills, key=lambda f: (f.ts_event, f.symbol))
    first_buy = next(f for f in expected if f.side is Side.BUY)

    await upgrade(pg_url)
    db = Database(pg_url)
    await copy_candles(db, warm)
    await db.dispose()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    dlq_before = (await js.stream_info("DLQ")).state.messages
    stack = EmbeddedStack(tmp_path, nats_url=nats_url, database_url=pg_url, redis_url=redis_url)
    services = [start_service(name, stack, tmp_path, extra_env=FAST_REDELIVERY) for name in SERVICES]
    chaos = Chaos(stack, tmp_path, services)

    others = [s for s in SERVICES if s != "executor"]
    kill_at = {len(replay) * (i + 1) // (len(others) + 1): name for i, name in enumerate(others)}
    pending: list[asyncio.Task[None]] = []

    def progress(done: int, total: int) -> None:
        for at, name in list(kill_at.items()):
            if done >= at:
                del kill_at[at]
                pending.append(asyncio.create_task(chaos.kill_and_restart(name)))

    async def kill_executor_mid_order(msg) -> None:  # type: ignore[no-untyped-def]
        order = OrderApproved.from_json(msg.data)
        if order.order_id == first_buy.order_id and "executor" not in chaos.killed:
            await chaos.kill_and_restart("executor")

    watch = await nc.subscribe("orders.approved.*", cb=kill_executor_mid_order)
    try:
        await wait_ready(services)
        await replay_candles(
            js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=120, progress=progress
        )
        await asyncio.gather(*pending)
    finally:
        await watch.unsubscribe()
        stop_services(list(chaos.services.values()))
        await nc.close()

    assert sorted(chaos.killed) == sorted(SERVICES)
    booked = await distributed_ledger(pg_url, run_id)
    assert [canonical(f) for f in booked] == [canonical(f) for f in expected]
    nc = await nats.connect(nats_url)
    try:
        assert (await nc.jetstream().stream_info("DLQ")).state.messages == dlq_before
    finally:
        await nc.close()
