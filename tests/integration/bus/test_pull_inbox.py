"""The runtime's own pull requests against a real NATS JetStream server.

Runs come in stream order and never exceed the batch size; a lone message is taken at once, not
after the request's life; a message published while a request waits is delivered on it; a
refused request raises with the server's reason; a stopping loop hands back (NAKs) what arrived
but was never taken, so a restart gets it at once instead of after the ack timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from coinpilot.bus import Bus, Consumer, Delivery, ensure_streams, parser_for
from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.errors import TransientError
from coinpilot.runtime.pull import PullLoop
from coinpilot.runtime.pull_inbox import PullInbox, PullRefused
from tests.support.messages import candle
from tests.support.servers import NatsProcess

pytestmark = pytest.mark.nats

_names = itertools.count()
LONG = 60.0  # a wait no test may need: reaching it means the inbox waited instead of returning


async def durable_on_fresh_symbol(js, *, ack_wait: float = 30.0) -> tuple[str, str]:
    """A symbol no other test uses and a durable consumer of its candles."""
    symbol = f"KRW-PI{next(_names)}"
    durable = f"pi-{symbol}"
    config = ConsumerConfig(
        name=durable,
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        filter_subject=f"candles.1m.{symbol}",
        max_ack_pending=1000,
    )
    await js.add_consumer("CANDLES", config=config)
    return symbol, durable


async def publish(js, symbol: str, minutes: range) -> None:
    bus = Bus(js, "pull-inbox-test")
    await bus.publish_batch([(candle(i, symbol=symbol), "live", None) for i in minutes])


@contextlib.asynccontextmanager
async def opened_inbox(nc, durable: str, batch_size: int) -> AsyncIterator[PullInbox]:
    inbox = PullInbox(
        nc, stream="CANDLES", durable=durable, batch_size=batch_size, request_expires=1.0, rest_wait=0.25
    )
    await inbox.open()
    try:
        yield inbox
    finally:
        await inbox.close()


async def take_in_background(inbox: PullInbox) -> asyncio.Task[list[Msg]]:
    """A take whose request is out and waiting when this returns."""
    taking = asyncio.create_task(inbox.take(LONG))
    await asyncio.sleep(0.2)
    return taking


def minutes_of(run: Sequence) -> list[int]:
    return [MinuteCandle.from_json(m.data).ts_open.minute for m in run]


async def test_a_backlog_comes_in_runs_of_at_most_the_batch_size_in_stream_order(nc, js) -> None:
    symbol, durable = await durable_on_fresh_symbol(js)
    await publish(js, symbol, range(40))
    async with opened_inbox(nc, durable, batch_size=16) as inbox:
        runs = []
        while sum(map(len, runs)) < 40:
            run = await inbox.take(LONG)
            assert run, "a backlog never yields an empty run"
            runs.append(run)
            for msg in run:
                await msg.ack()
        assert [m for run in runs for m in minutes_of(run)] == list(range(40))
        assert all(len(run) <= 16 for run in runs)
        assert len(runs[0]) == 16, "a backlog fills the first run"
        assert await inbox.take(0.3) == [], "nothing more: an empty run after the wait"


async def test_a_lone_message_is_taken_at_once_not_after_the_wait(nc, js) -> None:
    symbol, durable = await durable_on_fresh_symbol(js)
    await publish(js, symbol, range(1))
    async with opened_inbox(nc, durable, batch_size=256) as inbox, asyncio.timeout(LONG / 3):
        run = await inbox.take(LONG)
    assert minutes_of(run) == [0]


async def test_a_message_published_while_the_request_waits_is_delivered_on_it(nc, js) -> None:
    symbol, durable = await durable_on_fresh_symbol(js)
    async with opened_inbox(nc, durable, batch_size=8) as inbox:
        taking = await take_in_background(inbox)
        assert not taking.done()
        await publish(js, symbol, range(3))
        async with asyncio.timeout(LONG / 3):
            run = await taking
            while len(run) < 3:  # the three may arrive as one run or a few
                run += await inbox.take(LONG)
    assert minutes_of(run) == [0, 1, 2]


async def test_a_request_refused_by_the_server_raises_its_reason(nc, js) -> None:
    _, durable = await durable_on_fresh_symbol(js)
    async with opened_inbox(nc, durable, batch_size=8) as inbox:
        taking = await take_in_background(inbox)
        await js.delete_consumer("CANDLES", durable)  # the server ends it with 409 Consumer Deleted
        with pytest.raises(PullRefused, match="Consumer Deleted"):
            async with asyncio.timeout(LONG / 3):
                await taking


async def test_a_stopping_loop_hands_back_what_arrived_but_was_never_taken(nc, js) -> None:
    symbol, durable = await durable_on_fresh_symbol(js, ack_wait=LONG * 2)
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        seen.extend(d.message.ts_open.minute for d in ds)
        started.set()
        await release.wait()
        return [() for _ in ds]

    def loop() -> PullLoop:
        consumer = Consumer.of_batches(f"candles.1m.{symbol}", durable, handle, parser_for(MinuteCandle))
        bus = Bus(js, "pull-inbox-test")
        return PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=LONG)

    first = loop()
    await publish(js, symbol, range(1))
    await first.start()
    await asyncio.wait_for(started.wait(), timeout=LONG / 3)
    await publish(js, symbol, range(1, 4))  # delivered on the open request while minute 0 is handled
    await asyncio.sleep(0.3)
    stopping = asyncio.create_task(first.stop())
    release.set()
    await asyncio.wait_for(stopping, timeout=LONG / 3)
    assert seen == [0], "the stop came before the loop took the three"

    second = loop()
    await second.start()
    try:
        # NAKed, they come at once; left to the ack timer they would take LONG * 2
        async with asyncio.timeout(LONG / 3):
            while sorted(seen) != [0, 1, 2, 3]:
                await asyncio.sleep(0.05)
    finally:
        await second.stop()


@pytest.mark.parametrize("how", ["terminated", "killed"])
async def test_a_loop_carries_on_after_the_server_restarts(how: str) -> None:
    """Terminated, the server ends the open request (409 Server Shutdown) and the loop asks again
    at once; killed, the request vanishes unanswered and the loop asks again once its life is
    over. Either way it takes what was published after the restart."""
    server = NatsProcess()
    server.start()
    nc = await nats.connect(server.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        symbol, durable = await durable_on_fresh_symbol(js)
        seen: list[int] = []

        async def handle(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
            seen.extend(d.message.ts_open.minute for d in ds)
            return [() for _ in ds]

        consumer = Consumer.of_batches(f"candles.1m.{symbol}", durable, handle, parser_for(MinuteCandle))
        bus = Bus(js, "pull-inbox-test")
        loop = PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=3, ack_wait=LONG)
        await loop.start()
        try:
            await publish(js, symbol, range(5))
            async with asyncio.timeout(LONG / 3):
                while len(seen) < 5:
                    await asyncio.sleep(0.05)
            server.stop() if how == "terminated" else server.kill()
            server.start()
            async with asyncio.timeout(LONG / 3):
                while not nc.is_connected:
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(LONG / 3):
                while True:  # JetStream answers publishes again once it has recovered its streams
                    try:
                        await publish(js, symbol, range(5, 10))
                        break
                    except TransientError:
                        await asyncio.sleep(0.2)
            async with asyncio.timeout(LONG / 3):
                while len(set(seen)) < 10:
                    await asyncio.sleep(0.05)
            # a killed server may forget acks it had not yet written: those come again (at least once)
            assert list(dict.fromkeys(seen)) == list(range(10))
        finally:
            await loop.stop()
    finally:
        await nc.close()
        server.close()
