"""Delivery guarantees of the bus over a real NATS JetStream server.

Dedup by Nats-Msg-Id, redelivery of an un-acked message, dead letters for malformed payloads
and for handlers that keep failing with a bug, a transient failure retried in place (never
dead-lettered) — and the next good message still gets through.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js.api import ConsumerConfig

from coinpilot.bus import Bus, Consumer, ensure_streams, parser_for, process
from coinpilot.bus.consumer import Patience
from coinpilot.contracts import DeadLetter, IndicatorSnapshot, MinuteCandle
from coinpilot.errors import TransientError
from tests.support.messages import candle

pytestmark = pytest.mark.nats


@pytest.fixture
async def js(nats_url: str):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    for stream in ("CANDLES", "INDICATORS", "DLQ"):
        await js.purge_stream(stream)
    yield js
    await nc.close()


async def test_publishing_the_same_message_twice_stores_it_once(js) -> None:
    bus = Bus(js, "test")
    before = (await js.stream_info("CANDLES")).state.messages
    await bus.publish(candle(1), run_id="live")
    await bus.publish(candle(1), run_id="live")
    await bus.publish(candle(1), run_id="replay-1")  # another run is another message
    after = (await js.stream_info("CANDLES")).state.messages
    assert after - before == 2


async def test_a_consumer_that_dies_before_acking_gets_the_message_again(js) -> None:
    bus = Bus(js, "test")
    await bus.publish(candle(2, symbol="KRW-ETH"), run_id="live")
    config = ConsumerConfig(ack_wait=1.0)
    sub = await js.pull_subscribe("candles.1m.KRW-ETH", durable="test-dies", stream="CANDLES", config=config)
    first = (await sub.fetch(1, timeout=5))[0]
    assert first.metadata.num_delivered == 1
    await sub.unsubscribe()  # the consumer "dies": no ack, no nak

    sub = await js.pull_subscribe("candles.1m.KRW-ETH", durable="test-dies", stream="CANDLES")
    again = (await sub.fetch(1, timeout=10))[0]
    assert again.data == first.data
    assert again.metadata.num_delivered == 2
    await again.ack()


async def _run_consumer(js, consumer: Consumer, bus: Bus, n: int, max_deliver: int = 3) -> list[str]:
    sub = await js.pull_subscribe(consumer.subject, durable=consumer.durable, stream="CANDLES")
    outcomes: list[str] = []
    while len([o for o in outcomes if o != "nacked"]) < n:
        for msg in await sub.fetch(1, timeout=15):
            outcomes.append(await process(msg, consumer, bus, max_deliver))
    return outcomes


def _snapshot_of(candle: MinuteCandle) -> IndicatorSnapshot:
    """A handler's output: the smallest snapshot of ``candle``."""
    return IndicatorSnapshot(
        symbol=candle.symbol, ts_event=candle.ts_event, candle=candle, regime="UNKNOWN", bars_seen=1
    )


async def _dead_letters(js, service: str, n: int) -> list[DeadLetter]:
    sub = await js.pull_subscribe(f"dlq.{service}", durable=f"read-dlq-{service}", stream="DLQ")
    msgs = await sub.fetch(n, timeout=5)
    return [DeadLetter.from_json(m.data) for m in msgs]


async def test_malformed_payload_is_dead_lettered_and_the_next_message_is_processed(js) -> None:
    bus = Bus(js, "badinput")
    handled: list[MinuteCandle] = []

    async def handler(d):
        handled.append(d.message)
        return []

    consumer = Consumer("candles.1m.KRW-SOL", "test-malformed", handler, parser_for(MinuteCandle))
    await js.publish("candles.1m.KRW-SOL", b"{not json", headers={"Nats-Msg-Id": "bad-1"})
    wrong = json.loads(candle(3, symbol="KRW-SOL").to_json())
    wrong["surprise"] = 1
    await js.publish("candles.1m.KRW-SOL", json.dumps(wrong).encode(), headers={"Nats-Msg-Id": "bad-2"})
    await bus.publish(candle(4, symbol="KRW-SOL"), run_id="live")

    outcomes = await _run_consumer(js, consumer, bus, 3)

    assert outcomes == ["dead-lettered", "dead-lettered", "acked"]
    assert [c.ts_open for c in handled] == [candle(4).ts_open]
    letters = await _dead_letters(js, "badinput", 2)
    assert next(letter.body for letter in letters) == "{not json"
    assert all(letter.reason.startswith("contract:") for letter in letters)
    assert "surprise" in letters[1].reason
    assert letters[0].subject_original == "candles.1m.KRW-SOL"


async def test_a_handler_that_keeps_failing_with_a_bug_is_dead_lettered_after_max_deliveries(js) -> None:
    bus = Bus(js, "flaky")
    calls: list[int] = []

    async def handler(d):
        calls.append(d.deliveries)
        if d.message.volume == 13:
            raise RuntimeError("a bug: database unreachable")
        return [_snapshot_of(d.message)]

    consumer = Consumer("candles.1m.KRW-DOGE", "test-flaky", handler, parser_for(MinuteCandle))
    await bus.publish(candle(5, symbol="KRW-DOGE", volume="13"), run_id="live")
    await bus.publish(candle(6, symbol="KRW-DOGE"), run_id="live")

    outcomes = await asyncio.wait_for(_run_consumer(js, consumer, bus, 2, max_deliver=3), timeout=30)

    assert outcomes.count("nacked") == 2
    assert ("dead-lettered" in outcomes and outcomes[-1] == "acked") or outcomes.count("acked") == 1
    letters = await _dead_letters(js, "flaky", 1)
    assert letters[0].deliveries == 3
    assert "gave up after 3 deliveries: RuntimeError" in letters[0].reason
    assert "database unreachable" in letters[0].reason
    out = await js.pull_subscribe("indicators.1m.KRW-DOGE", durable="read-ind", stream="INDICATORS")
    produced = await out.fetch(1, timeout=5)
    assert IndicatorSnapshot.from_json(produced[0].data).candle.ts_open == candle(6).ts_open


async def test_headers_parsed_as_lists_by_fast_mail_parser_are_read_as_their_values(js) -> None:
    """nats-py parses headers with ``fast-mail-parser`` when it is installed (the
    ``nats-py[fast_parse]`` extra); from 0.10 that gives a list per header name. The ladder reads
    the run id, trace id and publish time from them all the same, and the output carries them."""
    bus = Bus(js, "listheaders")
    seen: list[tuple[str, str]] = []

    async def handler(d):
        seen.append((d.run_id, d.trace_id))
        return [_snapshot_of(d.message)]

    consumer = Consumer("candles.1m.KRW-XRP", "test-list-headers", handler, parser_for(MinuteCandle))
    await bus.publish(candle(7, symbol="KRW-XRP"), run_id="replay-lists", trace_id="trace-lists")
    sub = await js.pull_subscribe(consumer.subject, durable=consumer.durable, stream="CANDLES")
    msg = (await sub.fetch(1, timeout=5))[0]
    msg.headers = {name: [value] for name, value in (msg.headers or {}).items()}  # fast-mail-parser's shape

    assert await process(msg, consumer, bus, 3) == "acked"

    assert seen == [("replay-lists", "trace-lists")]
    out = await js.pull_subscribe("indicators.1m.KRW-XRP", durable="read-list-headers", stream="INDICATORS")
    produced = (await out.fetch(1, timeout=5))[0]
    assert produced.headers["Coinpilot-Run-Id"] == "replay-lists"
    assert produced.headers["Coinpilot-Trace-Id"] == "trace-lists"
    assert (await js.stream_info("DLQ")).state.messages == 0


async def test_a_transient_failure_is_retried_in_place_on_the_same_delivery_and_never_dead_lettered(
    js,
) -> None:
    """More failures than ``max_deliver`` allows: a dependency outage costs time, never the message,
    and the retries happen on the first delivery (no NAK that would let later messages overtake)."""
    bus = Bus(js, "inplace")
    seen: list[int] = []

    async def handler(d):
        seen.append(d.deliveries)
        if len(seen) <= 5:
            raise TransientError("database unreachable")
        return [_snapshot_of(d.message)]

    consumer = Consumer("candles.1m.KRW-ADA", "test-in-place", handler, parser_for(MinuteCandle))
    await bus.publish(candle(8, symbol="KRW-ADA"), run_id="live")
    sub = await js.pull_subscribe(consumer.subject, durable=consumer.durable, stream="CANDLES")
    msg = (await sub.fetch(1, timeout=5))[0]
    patience = Patience(base=0.01, cap=0.05)

    assert await process(msg, consumer, bus, 3, patience) == "acked"

    assert seen == [1] * 6, "six attempts, all on delivery 1"
    assert not patience.retrying
    assert (await js.stream_info("DLQ")).state.messages == 0
    out = await js.pull_subscribe("indicators.1m.KRW-ADA", durable="read-in-place", stream="INDICATORS")
    assert (
        IndicatorSnapshot.from_json((await out.fetch(1, timeout=5))[0].data).candle.ts_open
        == candle(8).ts_open
    )
