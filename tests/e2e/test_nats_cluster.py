"""Kill -9 of a NATS node mid-replay, on a 3-node JetStream cluster with R3 streams: same ledger.

The seven services run as processes (as in ``test_parity``) with ``COINPILOT_NATS_URL`` listing
the three nodes and ``COINPILOT_STREAM_REPLICAS=3``. The window is ``test_outages``' six hours
(two round trips, BTC and ETH), the shortest e2e window that trades: R3 makes every lockstep step
slower and the suite's time is short (the 30-hour window took 3.5 minutes here).

Part-way through the lockstep replay the JetStream meta leader, made leader of the CANDLES stream
too, is killed with SIGKILL: its clients reconnect to the other two, the streams elect new
leaders, a publish whose ack was lost is published again with the same ``Nats-Msg-Id`` (stored
once), and a pull request that died with the node is asked again. Later the node comes back and
catches up. The final ledger equals the fault-free backtest's, byte for byte, and nothing was
dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from apps.backtest.run import Window, run_backtest
from apps.demo import sample_files, start_services, stop_services, wait_ready
from coinpilot.bus import STREAMS, ensure_streams
from coinpilot.candle_files import load_candles
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from tests.e2e.test_outages import split_window
from tests.e2e.test_parity import canonical, distributed_ledger
from tests.support.servers import NatsCluster, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

KILL_AT = 0.35  # share of the replay published when the leader node dies
RESTART_AT = 0.7  # ... and when it comes back
SERVICE_ENV = {"COINPILOT_STREAM_REPLICAS": "3", "COINPILOT_ACK_WAIT_SECONDS": "2"}


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    cluster = NatsCluster()
    cluster.start()
    yield cluster
    cluster.close()


class NodeChaos:
    """Kills one node, once, notes who leads after it, and later starts it again."""

    def __init__(self, cluster: NatsCluster, js: JetStreamContext, node: str) -> None:
        self.cluster, self.js, self.node = cluster, js, node
        self.killed = False
        self.restarted = False
        self.leaders_after: tuple[str, str] | None = None  # (meta, CANDLES) once both moved

    async def kill(self) -> None:
        await asyncio.to_thread(self.cluster.kill, self.cluster.index_of(self.node))
        self.killed = True

        async def moved() -> bool:
            with contextlib.suppress(RuntimeError, nats.errors.Error, TimeoutError):
                meta = await self.cluster.meta_leader()
                candles = (await self.js.stream_info("CANDLES")).cluster.leader
                if meta != self.node and candles and candles != self.node:
                    self.leaders_after = (meta, candles)
                    return True
            return False

        await wait_for(moved, timeout=60, interval=0.2)

    async def restart(self) -> None:
        await wait_for(lambda: self.leaders_after is not None, timeout=90, interval=0.2)
        await asyncio.to_thread(self.cluster.start_node, self.cluster.index_of(self.node))
        self.restarted = True


async def test_killing_the_leading_nats_node_mid_replay_changes_nothing_in_the_ledger(
    cluster: NatsCluster, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    warm, replay = split_window(load_candles(sample_files()))
    run_id = f"cluster-{uuid.uuid4().hex[:8]}"
    backtest, _ = await run_backtest(Window(warm, replay), run_id=run_id)
    expected = sorted(backtest.fills, key=lambda f: (f.ts_event, f.symbol))
    assert len(expected) >= 4, "the window must trade"

    await upgrade(pg_url)
    db = Database(pg_url)
    await copy_candles(db, warm)
    await db.dispose()
    await cluster.wait_jetstream()
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    js = nc.jetstream()
    await ensure_streams(js, replicas=3)
    leader = await cluster.meta_leader()
    await cluster.move_leader(js, "CANDLES", leader)  # the node to kill leads both
    stack = EmbeddedStack(tmp_path, nats_url=cluster.url, database_url=pg_url, redis_url=redis_url)
    services = start_services(stack, tmp_path, extra_env=SERVICE_ENV)
    chaos = NodeChaos(cluster, js, leader)
    pending: list[asyncio.Task[None]] = []

    def progress(done: int, total: int) -> None:
        if not pending and done >= total * KILL_AT:
            pending.append(asyncio.create_task(chaos.kill()))
        elif len(pending) == 1 and done >= total * RESTART_AT:
            pending.append(asyncio.create_task(chaos.restart()))

    try:
        await wait_ready(services)
        await replay_candles(
            js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=120, progress=progress
        )
        await asyncio.gather(*pending)
        for service in services:
            assert service.proc.poll() is None, f"{service.name} died with the NATS node"
    finally:
        stop_services(services)

    try:
        assert chaos.killed and chaos.restarted and chaos.leaders_after is not None
        booked = await distributed_ledger(pg_url, run_id)
        assert [canonical(f) for f in booked] == [canonical(f) for f in expected]
        assert (await js.stream_info("DLQ")).state.messages == 0

        async def caught_up() -> bool:
            """The node that came back holds a current copy of every stream again."""
            for spec in STREAMS:
                info = await js.stream_info(spec.name)
                peers = {p.name: p.current for p in info.cluster.replicas or []}
                if info.config.num_replicas != 3 or (info.cluster.leader != leader and not peers.get(leader)):
                    return False
            return True

        await wait_for(caught_up, timeout=30, interval=0.5)
    finally:
        await nc.close()
