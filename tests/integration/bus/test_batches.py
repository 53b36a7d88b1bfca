"""Batch consumers over a real NATS JetStream server, through the runtime's own pull loop.

A backlog is handled in runs (one handler call each), in stream order, outputs stored in that
order, everything acked; a malformed message is dead-lettered alone; a failing run falls back to
one message at a time, so a poison message is isolated (dead-lettered on its first delivery) and a
transient failure heals in place, on the same deliveries; a stop lets the run in hand finish and ack.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from coinpilot.bus import Bus, Consumer, Delivery, parser_for
from coinpilot.contracts import Contract, DeadLetter, MinuteCandle
from coinpilot.errors import PermanentError, TransientError
from coinpilot.runtime.pull import PullLoop
from tests.support.messages import candle

pytestmark = pytest.mark.nats

_names = itertools.count()


def symbols() -> tuple[str, str]:
    """A fresh input and output symbol per test, so tests share the streams without meeting."""
    n = next(_names)
    return f"KRW-BI{n}", f"KRW-BO{n}"


def echo(d: Delivery[MinuteCandle], out_symbol: str) -> MinuteCandle:
    return d.message.model_copy(update={"symbol": out_symbol})


async def publish(js, bus: Bus, symbol: str, n: int, poison: int | None = None) -> None:
    for i in range(n):
        await bus.publish(candle(i, symbol=symbol, volume="13" if i == poison else "1"), run_id="live")


async def wait_for(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def consumer_idle(js, durable: str, timeout: float = 10.0) -> bool:
    """True once the consumer has nothing pending and nothing awaiting an ack (acks are async)."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info("CANDLES", durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return True
            await asyncio.sleep(0.05)


async def read(js, subject: str, stream: str, n: int) -> list[bytes]:
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    try:
        return [(await sub.next_msg(timeout=5)).data for _ in range(n)]
    finally:
        await sub.unsubscribe()


def loop_for(nc, js, bus: Bus, consumer: Consumer) -> PullLoop:
    return PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=30.0)


async def test_a_backlog_is_handled_in_runs_in_order_and_everything_is_acked(nc, js) -> None:
    source, target = symbols()
    bus = Bus(js, "batches")
    runs: list[list[int]] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        runs.append([d.message.ts_open.minute for d in ds])
        return [[echo(d, target)] for d in ds]

    consumer = Consumer.of_batches(f"candles.1m.{source}", f"b-{source}", handle, parser_for(MinuteCandle))
    await publish(js, bus, source, 60)  # a backlog before the consumer starts
    loop = loop_for(nc, js, bus, consumer)
    await loop.start()
    try:
        await wait_for(lambda: sum(map(len, runs)) == 60)
    finally:
        await loop.stop()

    handled = [m for run in runs for m in run]
    assert handled == list(range(60))
    assert max(map(len, runs)) > 1, "a backlog is taken in runs, not one message at a time"
    assert all(len(run) <= 16 for run in runs), "a run never exceeds the batch size"
    outputs = [MinuteCandle.from_json(b) for b in await read(js, f"candles.1m.{target}", "CANDLES", 60)]
    assert [c.ts_open.minute for c in outputs] == list(range(60))
    assert await consumer_idle(js, f"b-{source}")


async def test_a_malformed_message_is_dead_lettered_alone_and_the_rest_still_run_as_a_batch(nc, js) -> None:
    source, _ = symbols()
    bus = Bus(js, f"batchbad{source[-2:]}".lower())
    handled: list[int] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        handled.extend(d.message.ts_open.minute for d in ds)
        return [() for _ in ds]

    subject = f"candles.1m.{source}"
    await publish(js, bus, source, 3)
    await js.publish(subject, b"{not json", headers={"Nats-Msg-Id": f"bad-{source}"})
    await bus.publish(candle(3, symbol=source), run_id="live")
    loop = loop_for(
        nc, js, bus, Consumer.of_batches(subject, f"b-{source}", handle, parser_for(MinuteCandle))
    )
    await loop.start()
    try:
        await wait_for(lambda: len(handled) == 4)
    finally:
        await loop.stop()

    assert handled == [0, 1, 2, 3]
    letters = await read(js, f"dlq.{bus.service}", "DLQ", 1)
    letter = DeadLetter.from_json(letters[0])
    assert letter.body == "{not json" and letter.reason.startswith("contract:")
    assert await consumer_idle(js, f"b-{source}")


async def test_a_failing_run_falls_back_to_one_at_a_time_and_only_the_poison_is_dead_lettered(nc, js) -> None:
    source, target = symbols()
    bus = Bus(js, f"batchpoison{source[-2:]}".lower())
    calls: list[list[int]] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        calls.append([d.message.ts_open.minute for d in ds])
        if any(d.message.volume == 13 for d in ds):
            raise PermanentError("volume 13 is cursed")
        return [[echo(d, target)] for d in ds]

    subject = f"candles.1m.{source}"
    await publish(js, bus, source, 6, poison=2)
    loop = loop_for(
        nc, js, bus, Consumer.of_batches(subject, f"b-{source}", handle, parser_for(MinuteCandle))
    )
    await loop.start()
    try:
        await wait_for(lambda: len(calls) == 7)
    finally:
        await loop.stop()

    # the backlog arrived as one run holding the poison; then each message went through the ladder alone
    assert calls == [[0, 1, 2, 3, 4, 5], [0], [1], [2], [3], [4], [5]]
    letter = DeadLetter.from_json((await read(js, f"dlq.{bus.service}", "DLQ", 1))[0])
    assert MinuteCandle.from_json(letter.body.encode()).ts_open.minute == 2
    assert letter.reason.startswith("permanent: PermanentError: volume 13 is cursed")
    assert letter.deliveries == 1 and letter.stream == "CANDLES"
    outputs = [MinuteCandle.from_json(b) for b in await read(js, f"candles.1m.{target}", "CANDLES", 5)]
    assert [c.ts_open.minute for c in outputs] == [0, 1, 3, 4, 5]
    assert await consumer_idle(js, f"b-{source}")


async def test_a_transient_failure_of_a_run_heals_in_place_without_a_dead_letter(nc, js) -> None:
    source, _ = symbols()
    bus = Bus(js, f"batchflaky{source[-2:]}".lower())
    attempts: list[int] = []
    done: list[int] = []
    deliveries: list[int] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        attempts.append(len(ds))
        if len(attempts) == 1:
            raise TransientError("database restarting")
        done.extend(d.message.ts_open.minute for d in ds)
        deliveries.extend(d.deliveries for d in ds)
        return [() for _ in ds]

    subject = f"candles.1m.{source}"
    await publish(js, bus, source, 5)
    loop = loop_for(
        nc, js, bus, Consumer.of_batches(subject, f"b-{source}", handle, parser_for(MinuteCandle))
    )
    await loop.start()
    try:
        await wait_for(lambda: sorted(done) == [0, 1, 2, 3, 4])
    finally:
        await loop.stop()

    assert attempts[0] == 5 and attempts[1:] == [1] * 5
    assert done == [0, 1, 2, 3, 4]
    assert deliveries == [1] * 5, "retried where it failed, never NAKed for a redelivery"
    dlq = await js.stream_info("DLQ", subjects_filter=f"dlq.{bus.service}")
    assert not dlq.state.subjects
    assert await consumer_idle(js, f"b-{source}")


async def test_stop_lets_the_run_in_hand_finish_and_ack(nc, js) -> None:
    source, _ = symbols()
    bus = Bus(js, "batchstop")
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        started.set()
        await release.wait()
        finished.extend(d.message.ts_open.minute for d in ds)
        return [() for _ in ds]

    subject = f"candles.1m.{source}"
    await publish(js, bus, source, 4)
    loop = loop_for(
        nc, js, bus, Consumer.of_batches(subject, f"b-{source}", handle, parser_for(MinuteCandle))
    )
    await loop.start()
    await asyncio.wait_for(started.wait(), timeout=10)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done(), "stop waits for the run in hand"
    release.set()
    await asyncio.wait_for(stopping, timeout=10)

    # the run in hand (the whole backlog) finished ...
    assert finished == [0, 1, 2, 3]
    assert await consumer_idle(js, f"b-{source}")  # ... and acked: nothing waits on the ack timer
