"""A partition's new owner starts at the first message not acked, in order (real NATS).

A dead owner's un-acked messages would otherwise come back only after their ack wait, behind
newer ones the new owner already handled; ``reset_consumer`` recreates the durable at its ack
floor instead. A durable with nothing in flight is kept; a missing one starts where the stage's
unpartitioned durable left off.
"""

from __future__ import annotations

import uuid

from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from coinpilot.runtime.partitioned import reset_consumer

BASE = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_deliver=-1)


async def fresh_stream(js) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"PRESET_{tag}", f"preset{tag}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.*"]))
    return stream, prefix


async def pull(js, stream: str, durable: str, n: int) -> list:  # type: ignore[no-untyped-def]
    sub = await js.pull_subscribe_bind(durable, stream)
    try:
        return await sub.fetch(n, timeout=2)
    finally:
        await sub.unsubscribe()


async def test_a_dead_owners_unacked_messages_come_first_for_the_new_owner(js) -> None:  # type: ignore[no-untyped-def]
    stream, prefix = await fresh_stream(js)
    filters = [f"{prefix}.A"]
    assert (
        await reset_consumer(js, BASE, stream, "stage-p0", filters, "stage")
        == "created from stream sequence 1"
    )
    for i in range(10):
        await js.publish(f"{prefix}.A", str(i).encode())
        await js.publish(f"{prefix}.B", b"other partition")
    dead = await pull(js, stream, "stage-p0", 6)
    assert [m.data for m in dead] == [str(i).encode() for i in range(6)]
    for msg in dead[:3]:
        await msg.ack_sync()
    # the owner died holding 3, 4, 5 (un-acked): the new owner resets and gets them first, at once
    done = await reset_consumer(js, BASE, stream, "stage-p0", filters, "stage")
    assert done == f"reset to stream sequence {dead[3].metadata.sequence.stream}"
    again = await pull(js, stream, "stage-p0", 10)
    assert [m.data for m in again] == [str(i).encode() for i in range(3, 10)]
    for msg in again:
        await msg.ack_sync()
    assert await reset_consumer(js, BASE, stream, "stage-p0", filters, "stage") == "kept"
    info = await js.consumer_info(stream, "stage-p0")
    assert info.config.filter_subjects == filters and info.num_pending == 0


async def test_a_new_partition_durable_starts_where_the_shared_one_left_off(js) -> None:  # type: ignore[no-untyped-def]
    stream, prefix = await fresh_stream(js)
    await js.add_consumer(
        stream,
        ConsumerConfig(durable_name="stage", ack_policy=AckPolicy.EXPLICIT, filter_subject=f"{prefix}.*"),
    )
    for i in range(4):
        await js.publish(f"{prefix}.A", str(i).encode())
    for msg in await pull(js, stream, "stage", 2):
        await msg.ack_sync()
    done = await reset_consumer(js, BASE, stream, "stage-p1", [f"{prefix}.A"], "stage")
    assert done == "created from stream sequence 3"
    assert [m.data for m in await pull(js, stream, "stage-p1", 4)] == [b"2", b"3"]
