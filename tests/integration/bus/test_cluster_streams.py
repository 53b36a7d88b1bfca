"""Replicated streams on a real 3-node JetStream cluster (``NatsCluster``): created and scaled to
the configured replicas, refused clearly where they cannot be placed, and a re-publish after the
stream leader died still stored once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from coinpilot.bus import STREAMS, StreamSpec, ensure_streams
from coinpilot.bus.streams import StreamReplicasError
from tests.support.servers import NatsCluster, NatsProcess, wait_for

pytestmark = pytest.mark.nats


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    cluster = NatsCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
async def nc(cluster: NatsCluster) -> AsyncIterator[Client]:
    await cluster.wait_jetstream()
    nc = await nats.connect(cluster.urls)
    yield nc
    await nc.close()


def a_stream() -> StreamSpec:
    name = f"T{uuid.uuid4().hex[:8].upper()}"
    return StreamSpec(name, (f"{name.lower()}.>",), max_age_seconds=86_400)


async def test_every_stream_is_created_with_three_replicas_on_the_cluster(
    cluster: NatsCluster, nc: Client
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, replicas=3)
    for spec in STREAMS:
        info = await js.stream_info(spec.name)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        peers = {info.cluster.leader, *(p.name for p in info.cluster.replicas or [])}
        assert peers == {cluster.node_name(i) for i in range(3)}
    assert await ensure_streams(js, replicas=3) == []


async def test_replicas_default_to_the_setting(nc: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = a_stream()
    monkeypatch.setenv("COINPILOT_STREAM_REPLICAS", "3")
    assert await ensure_streams(nc.jetstream(), (spec,)) == [f"created {spec.name}"]
    assert (await nc.jetstream().stream_info(spec.name)).config.num_replicas == 3


async def test_without_the_setting_replicated_streams_keep_their_replicas(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command run without COINPILOT_STREAM_REPLICAS (a replay from a laptop) never scales
    the cluster's streams down; new streams get one copy."""
    js = nc.jetstream()
    kept, new = a_stream(), a_stream()
    await ensure_streams(js, (kept,), replicas=3)
    monkeypatch.delenv("COINPILOT_STREAM_REPLICAS", raising=False)
    assert await ensure_streams(js, (kept, new)) == [f"created {new.name}"]
    assert (await js.stream_info(kept.name)).config.num_replicas == 3
    assert (await js.stream_info(new.name)).config.num_replicas == 1


async def test_a_single_replica_stream_is_scaled_up_in_place(nc: Client) -> None:
    js = nc.jetstream()
    spec = a_stream()
    await ensure_streams(js, (spec,), replicas=1)
    await js.publish(f"{spec.name.lower()}.x", b"kept", headers={"Nats-Msg-Id": "one"})
    assert await ensure_streams(js, (spec,), replicas=3) == [f"updated {spec.name}"]
    info = await js.stream_info(spec.name)
    assert info.config.num_replicas == 3
    assert info.state.messages == 1


async def test_more_replicas_than_nodes_are_refused_with_the_setting_to_change(nc: Client) -> None:
    spec = a_stream()
    with pytest.raises(StreamReplicasError, match="COINPILOT_STREAM_REPLICAS") as caught:
        await ensure_streams(nc.jetstream(), (spec,), replicas=5)
    assert "5 replicas" in str(caught.value)


async def test_replicas_on_a_single_server_are_refused() -> None:
    server = NatsProcess()
    server.start()
    try:
        nc = await nats.connect(server.url)
        try:
            with pytest.raises(StreamReplicasError, match="cluster of at least 3 nodes"):
                await ensure_streams(nc.jetstream(), (a_stream(),), replicas=3)
        finally:
            await nc.close()
    finally:
        server.close()


async def test_replicas_outside_what_jetstream_allows_are_refused(nc: Client) -> None:
    with pytest.raises(StreamReplicasError, match=r"1\.\.5"):
        await ensure_streams(nc.jetstream(), (a_stream(),), replicas=0)


async def test_a_publish_repeated_after_the_leader_died_is_stored_once(cluster: NatsCluster) -> None:
    """A publisher whose ack was lost with the leader publishes again with the same Nats-Msg-Id;
    the new leader holds the same duplicate window, so the stream keeps one copy."""
    await cluster.wait_jetstream()
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    killed: int | None = None
    try:
        js = nc.jetstream()
        spec = a_stream()
        await ensure_streams(js, (spec,), replicas=3)
        subject = f"{spec.name.lower()}.x"
        await js.publish(subject, b"once", headers={"Nats-Msg-Id": "m-1"})
        leader = (await js.stream_info(spec.name)).cluster.leader
        killed = cluster.index_of(leader)
        cluster.kill(killed)

        async def published_again() -> bool:
            try:
                ack = await js.publish(subject, b"once", headers={"Nats-Msg-Id": "m-1"}, timeout=1)
            except (nats.errors.Error, TimeoutError):
                return False
            return ack.duplicate is True

        await wait_for(published_again, timeout=30, interval=0.2)
        info = await js.stream_info(spec.name)
        assert info.state.messages == 1
        assert info.cluster.leader != leader
    finally:
        await nc.close()
        if killed is not None:
            cluster.start_node(killed)
