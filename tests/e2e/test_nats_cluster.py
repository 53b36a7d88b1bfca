"""Kill -9 of a NATS node mid-replay, on a 3-node JetStream cluster with R3 streams, under the
scaled deployment: same ledger.

The scaled deployment of ``test_partitions`` (``tests/support/scaled.py``: partitioned collector,
indicator and strategy, risk and executor with standbys, two agents and two notifiers) runs with
``COINPILOT_NATS_URL`` listing the three nodes and ``COINPILOT_STREAM_REPLICAS=3``, so the streams
and the lease buckets are R3. The window is ``scaled_window``'s fourteen hours.

Part-way through the lockstep replay the JetStream meta leader, made leader of the CANDLES stream
too, is killed with SIGKILL: its clients reconnect to the other two, the streams and buckets elect
new leaders, a publish whose ack was lost is published again with the same ``Nats-Msg-Id``
(stored once), a pull request that died with the node is asked again, and the leases live through
the election. Later the node comes back and catches up. The final ledger equals the fault-free
backtest's byte for byte, nothing was dead-lettered, no replica died, each symbol's messages were
handled in publish order (the acks are recorded on a node that stays up), one AI decision per
proposal and one post per notified event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from coinpilot.bus import STREAMS
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from tests.support.e2e_run import prepare_run
from tests.support.fake_webhooks import FakeN8n, running
from tests.support.scaled import (
    SCALED,
    AckLog,
    Deployment,
    check_scaled_run,
    notifier_env,
    scaled_window,
)
from tests.support.servers import NatsCluster, wait_for

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

KILL_AT = 0.35  # share of the replay published when the leader node dies
RESTART_AT = 0.7  # ... and when it comes back
SERVICE_ENV = {
    "COINPILOT_STREAM_REPLICAS": "3",
    "COINPILOT_ACK_WAIT_SECONDS": "2",
    # a lease must outlive the election of its bucket's new leader: with the kill tests' 6 s (held
    # 5 s without a renewal) a loaded machine's election took longer, every risk replica let go
    # (the active lost its lease, the standby's start-up met "JetStream temporarily unavailable")
    # and both exited, as they must without an orchestrator to restart them
    "COINPILOT_PARTITION_LEASE_SECONDS": "15",
}


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


async def caught_up(js: JetStreamContext, node: str) -> bool:
    """``node``, back, holds a current copy of every stream again."""
    for spec in STREAMS:
        info = await js.stream_info(spec.name)
        peers = {p.name: p.current for p in info.cluster.replicas or []}
        if info.config.num_replicas != 3 or (info.cluster.leader != node and not peers.get(node)):
            return False
    return True


async def test_killing_the_leading_nats_node_mid_replay_changes_nothing_in_the_ledger(
    cluster: NatsCluster, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    warm, replay = scaled_window()
    symbols = sorted({c.symbol for c in replay})
    await cluster.wait_jetstream()
    prepared = await prepare_run("cluster", warm, replay, cluster.urls, pg_url, replicas=3)
    run_id, nc, js = prepared.run_id, prepared.nc, prepared.js
    assert len(prepared.expected) >= 4, "the window must trade"
    leader = await cluster.meta_leader()
    await cluster.move_leader(js, "CANDLES", leader)  # the node to kill leads both
    survivor = next(url for i, url in enumerate(cluster.urls) if cluster.node_name(i) != leader)
    recorder = await nats.connect(survivor)  # every ack, on a node that stays up
    acks = AckLog()
    ack_sub = await recorder.subscribe("$JS.ACK.>", cb=acks.on_ack)
    chaos = NodeChaos(cluster, js, leader)
    pending: list[asyncio.Task[None]] = []

    def progress(done: int, total: int) -> None:
        if not pending and done >= total * KILL_AT:
            pending.append(asyncio.create_task(chaos.kill()))
        elif len(pending) == 1 and done >= total * RESTART_AT:
            pending.append(asyncio.create_task(chaos.restart()))

    async with running(FakeN8n()) as n8n:
        stack = EmbeddedStack(tmp_path, nats_url=cluster.url, database_url=pg_url, redis_url=redis_url)
        env = SERVICE_ENV | {"COINPILOT_SYMBOLS": ",".join(symbols)}
        deployment = Deployment(stack, tmp_path, env, {"notifier": notifier_env(n8n)})
        deployment.start(SCALED)
        try:
            await deployment.ready(js, SCALED)
            await replay_candles(
                js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=120, progress=progress
            )
            await asyncio.gather(*pending)
            await recorder.flush()
            for member in deployment.processes:
                assert deployment.alive(member), f"{member} died with the NATS node"
        finally:
            await ack_sub.unsubscribe()
            await recorder.close()
            deployment.stop()

        try:
            assert chaos.killed and chaos.restarted and chaos.leaders_after is not None
            print(
                "cluster: " + await check_scaled_run(prepared, pg_url, SCALED, acks, n8n, handled_once=False)
            )
            await wait_for(lambda: caught_up(js, leader), timeout=30, interval=0.5)
        finally:
            await nc.close()
