"""Transient failures over a real NATS JetStream server: waited out in place, in order, never
dead-lettered; the consumer says so (metrics, readiness) and a stop hands the waiting run back."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from apps.host import ServiceHost
from coinpilot.bus import Bus, Consumer, Delivery, parser_for
from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.errors import TransientError
from coinpilot.runtime import Runtime, ServiceDefinition
from coinpilot.runtime.pull import PullLoop
from coinpilot.settings import CommonSettings
from tests.support.messages import candle
from tests.support.servers import wait_for

pytestmark = pytest.mark.nats

_names = itertools.count()


def fresh(prefix: str) -> tuple[str, str]:
    """A fresh symbol and service name per test, so tests share the streams without meeting."""
    n = next(_names)
    return f"KRW-TR{prefix.upper()}{n}", f"transient{prefix}{n}"


class Outage:
    """A dependency that is down until ``heal``: a handler calls ``check`` first."""

    def __init__(self) -> None:
        self.down = True
        self.attempts: list[tuple[int, int]] = []  # (minute, delivery) of every attempt

    def check(self, d: Delivery[MinuteCandle]) -> None:
        self.attempts.append((d.message.ts_open.minute, d.deliveries))
        if self.down:
            raise TransientError("database unreachable")

    def heal(self) -> None:
        self.down = False


async def three_candles_behind_an_outage(
    js, prefix: str
) -> tuple[str, str, Bus, Outage, list[tuple[int, int]], Consumer]:
    """Three candles of a fresh symbol published, and a consumer whose handler meets ``Outage``
    first and then records (minute, delivery) of each message it handled in ``done``."""
    symbol, service = fresh(prefix)
    bus = Bus(js, service)
    outage = Outage()
    done: list[tuple[int, int]] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        outage.check(d)
        done.append((d.message.ts_open.minute, d.deliveries))
        return []

    for minute in range(3):
        await bus.publish(candle(minute, symbol=symbol), run_id="live")
    consumer = Consumer(f"candles.1m.{symbol}", f"t-{symbol}", handle, parser_for(MinuteCandle))
    return symbol, service, bus, outage, done, consumer


def retrying(service: str) -> float | None:
    return REGISTRY.get_sample_value("coinpilot_consumers_retrying", {"service": service})


def retries(service: str, subject: str) -> float:
    labels = {"service": service, "subject": subject}
    return REGISTRY.get_sample_value("coinpilot_transient_retries_total", labels) or 0.0


def quick(loop: PullLoop) -> PullLoop:
    """Short waits between attempts, so a test spends milliseconds per retry."""
    loop.patience.base, loop.patience.cap = 0.01, 0.05
    return loop


async def dead_letters(js, service: str) -> int:
    info = await js.stream_info("DLQ", subjects_filter=f"dlq.{service}")
    return sum((info.state.subjects or {}).values())


async def idle(js, durable: str) -> bool:
    info = await js.consumer_info("CANDLES", durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_an_outage_longer_than_max_deliver_is_waited_out_in_place_in_order(nc, js) -> None:
    symbol, service, bus, outage, done, consumer = await three_candles_behind_an_outage(js, "a")
    subject = consumer.subject
    loop = quick(PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=30.0))
    await loop.start()
    try:
        await wait_for(lambda: len(outage.attempts) >= 12, timeout=20)
        assert loop.retrying and retrying(service) == 1
        assert {minute for minute, _ in outage.attempts} == {0}, "nothing overtakes the waiting message"
        outage.heal()
        await wait_for(lambda: len(done) == 3, timeout=20)
    finally:
        await loop.stop()

    assert done == [(0, 1), (1, 1), (2, 1)], "in order, each on its first delivery"
    assert not loop.retrying and retrying(service) == 0
    assert retries(service, subject) >= 12
    assert await dead_letters(js, service) == 0
    assert await wait_for(lambda: idle(js, f"t-{symbol}"), timeout=10)


async def test_a_run_of_a_batch_consumer_waits_out_an_outage_at_its_first_message(nc, js) -> None:
    symbol, service = fresh("b")
    bus = Bus(js, service)
    outage = Outage()
    calls: list[list[int]] = []
    done: list[int] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        calls.append([d.message.ts_open.minute for d in ds])
        for d in ds:
            outage.check(d)
        done.extend(d.message.ts_open.minute for d in ds)
        return [() for _ in ds]

    subject = f"candles.1m.{symbol}"
    for minute in range(4):
        await bus.publish(candle(minute, symbol=symbol), run_id="live")
    consumer = Consumer.of_batches(subject, f"t-{symbol}", handle, parser_for(MinuteCandle))
    loop = quick(PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=30.0))
    await loop.start()
    try:
        await wait_for(lambda: len(calls) >= 8, timeout=20)
        assert loop.retrying
        assert calls[0] == [0, 1, 2, 3] and all(c == [0] for c in calls[1:]), "the run waits at its first"
        outage.heal()
        await wait_for(lambda: len(done) == 4, timeout=20)
    finally:
        await loop.stop()

    assert done == [0, 1, 2, 3]
    assert await dead_letters(js, service) == 0
    assert await wait_for(lambda: idle(js, f"t-{symbol}"), timeout=10)


async def test_a_stop_while_waiting_hands_the_message_and_those_behind_it_back(nc, js) -> None:
    symbol, service = fresh("c")
    bus = Bus(js, service)
    outage = Outage()
    done: list[int] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        outage.check(d)
        done.append(d.message.ts_open.minute)
        return []

    subject = f"candles.1m.{symbol}"
    for minute in range(3):
        await bus.publish(candle(minute, symbol=symbol), run_id="live")
    consumer = Consumer(subject, f"t-{symbol}", handle, parser_for(MinuteCandle))
    loop = quick(PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=60.0))
    await loop.start()
    await wait_for(lambda: loop.retrying, timeout=20)
    await asyncio.wait_for(loop.stop(), timeout=10)
    assert done == [] and not loop.retrying

    outage.heal()
    again = quick(PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=60.0))
    await again.start()
    try:
        # well before the 60 s ack timer: they were handed back, not abandoned
        await wait_for(lambda: len(done) == 3, timeout=20)
    finally:
        await again.stop()
    assert done == [0, 1, 2]
    assert await dead_letters(js, service) == 0


# -- readiness through the service host ---------------------------------------------------------
OUTAGE = Outage()
READY_SYMBOL = "KRW-TRREADY"


def build_flaky(rt: Runtime) -> ServiceDefinition:
    """A plug-in service whose one consumer depends on ``OUTAGE``."""

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        OUTAGE.check(d)
        return []

    consumer = Consumer(
        f"candles.1m.{READY_SYMBOL}", "flaky-ready", handle, parser_for(MinuteCandle), batch_size=1
    )
    return ServiceDefinition(name="flaky", consumers=[consumer])


async def test_the_service_is_not_ready_while_a_consumer_waits_out_an_outage(nats_url, js) -> None:
    settings = CommonSettings(nats_url=nats_url, database_url="", redis_url="")
    host = ServiceHost([f"{__name__}:build_flaky"], settings, serve_http=False)
    await host.start()
    try:
        assert (await host.ready_checks())["consumers"] is True
        await Bus(js, "test").publish(candle(0, symbol=READY_SYMBOL), run_id="live")
        await wait_for(lambda: host._loops[0].retrying, timeout=20)

        checks = await host.ready_checks()
        assert checks == {"nats": True, "consumers": False}
        assert REGISTRY.get_sample_value("coinpilot_service_ready", {"service": "build_flaky"}) == 0

        OUTAGE.heal()
        await wait_for(lambda: not host._loops[0].retrying, timeout=20)
        assert (await host.ready_checks()) == {"nats": True, "consumers": True}
        assert REGISTRY.get_sample_value("coinpilot_service_ready", {"service": "build_flaky"}) == 1
    finally:
        await host.stop()


async def test_messages_held_through_an_outage_longer_than_the_ack_wait_are_not_redelivered(nc, js) -> None:
    """Two replicas of one durable: the one waiting in place keeps its run alive (in_progress), so
    the other is never handed those messages when their ack timer would have run out; each
    message is handled once, on its first delivery."""
    symbol, _, bus, outage, done, consumer = await three_candles_behind_an_outage(js, "d")
    loops = [PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=2.0) for _ in range(2)]
    for loop in loops:
        loop.patience.base, loop.patience.cap = 0.05, 0.25
        await loop.start()
    try:
        await wait_for(lambda: len(outage.attempts) >= 24, timeout=30)  # well past the 2 s ack wait
        outage.heal()
        await wait_for(lambda: len(done) == 3, timeout=20)
        await wait_for(lambda: idle(js, f"t-{symbol}"), timeout=10)
    finally:
        for loop in loops:
            await loop.stop()

    # two replicas of one durable may split the messages between them: each once, on delivery 1
    assert sorted(done) == [(0, 1), (1, 1), (2, 1)]
    assert {delivery for _, delivery in outage.attempts} == {1}, "never redelivered to the other replica"
    assert sum(loop.retrying for loop in loops) == 0


async def test_a_retry_slower_than_the_ack_wait_keeps_its_message_in_hand(nc, js) -> None:
    """A retry that itself takes long (a connect that times out after seconds) is kept alive
    while it runs, so the other replica is not handed the message meanwhile."""
    symbol, service = fresh("e")
    bus = Bus(js, service)
    attempts: list[int] = []
    done: list[tuple[int, int]] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        attempts.append(d.deliveries)
        if len(attempts) == 1:
            raise TransientError("connection refused")
        if len(attempts) == 2:
            await asyncio.sleep(3.0)  # the dependency answers after 3 ack waits: a connect timeout
            raise TransientError("connect timed out")
        done.append((d.message.ts_open.minute, d.deliveries))
        return []

    subject = f"candles.1m.{symbol}"
    await bus.publish(candle(0, symbol=symbol), run_id="live")
    consumer = Consumer(subject, f"t-{symbol}", handle, parser_for(MinuteCandle))
    loops = [PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=1.0) for _ in range(2)]
    for loop in loops:
        quick(loop)
        await loop.start()
    try:
        await wait_for(lambda: done, timeout=20)
        await wait_for(lambda: idle(js, f"t-{symbol}"), timeout=10)
    finally:
        for loop in loops:
            await loop.stop()

    assert attempts == [1, 1, 1] and done == [(0, 1)], "three attempts on delivery 1, handled once"
