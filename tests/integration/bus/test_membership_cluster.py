"""Membership on a real 3-node JetStream cluster whose lease bucket cannot answer for a while."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from coinpilot.bus.membership import LeaseTimes, Membership, open_bucket
from tests.support.servers import NatsCluster, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.slow]

TIMES = LeaseTimes(lease_seconds=6.0, heartbeat_seconds=0.5, margin=0.5)


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    cluster = NatsCluster()
    cluster.start()
    yield cluster
    cluster.close()


async def led(js: JetStreamContext, kv: KeyValue) -> bool:
    info = await js.stream_info(f"KV_{kv._name}")
    return info.cluster is not None and bool(info.cluster.leader)


async def test_a_member_whose_r3_bucket_has_no_leader_starts_once_it_has_one(
    cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21: the second replica of a stage met the first one's new R3 bucket before its leader
    was elected, and its start-up failed (exit 1) instead of trying the round again."""
    await cluster.wait_jetstream()
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    kv = await open_bucket(js, "quorum-test", TIMES, replicas=3)
    await wait_for(lambda: led(js, kv), timeout=30, interval=0.2)
    for node in (1, 2):  # one node of three: no quorum, the bucket cannot answer
        await asyncio.to_thread(cluster.kill, node)
    taken: list[int] = []

    async def take(partition: int) -> None:
        taken.append(partition)

    async def drop(_: int) -> None:
        return None

    membership = Membership(
        kv, js, member="m-0", partitions=2, times=TIMES, on_acquire=take, on_release=drop, on_lost=drop
    )
    caplog.set_level(logging.WARNING, logger="coinpilot.bus")
    starting = asyncio.create_task(membership.start())
    try:
        await wait_for(lambda: "first membership round failed" in caplog.text or starting.done(), timeout=60)
        assert not starting.done(), "the start-up gave up while the bucket could not answer"
        for node in (1, 2):
            await asyncio.to_thread(cluster.start_node, node)
        await asyncio.wait_for(starting, timeout=90)
        assert sorted(taken) == [0, 1]
    finally:
        if not starting.done():
            starting.cancel()
        await membership.stop()
        await nc.close()
