"""A message whose dead letter would exceed the server's max payload, on a real nats-server: the
letter is stored truncated with the original's stream and sequence, the message is terminated,
and the valid message behind it is handled (the consumer is not wedged)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest

from coinpilot.bus import Bus, Consumer, Delivery, parser_for
from coinpilot.contracts import Contract, DeadLetter, MinuteCandle
from coinpilot.runtime.pull import PullLoop
from tests.support.messages import candle
from tests.support.servers import wait_for

pytestmark = pytest.mark.nats


async def test_an_oversized_dead_letter_is_truncated_and_the_consumer_goes_on(nc, js) -> None:
    symbol, service = "KRW-HUGE", "hugeletters"
    bus = Bus(js, service)
    handled: list[int] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        handled.append(d.message.ts_open.minute)
        return []

    subject = f"candles.1m.{symbol}"
    body = b"\xff" * (nc.max_payload - 8 * 1024)  # just under the max; base64 makes its letter ~4/3 of it
    ack = await js.publish(subject, body, headers={"Nats-Msg-Id": "huge-1", "Coinpilot-Run-Id": "live"})
    await bus.publish(candle(1, symbol=symbol), run_id="live")
    consumer = Consumer(subject, f"h-{symbol}", handle, parser_for(MinuteCandle))
    loop = PullLoop(nc, js, bus, consumer, batch_size=16, max_deliver=5, ack_wait=30.0)
    await loop.start()
    try:
        await wait_for(lambda: handled == [1], timeout=20)
    finally:
        await loop.stop()

    sub = await js.subscribe(f"dlq.{service}", stream="DLQ", ordered_consumer=True)
    try:
        letter = DeadLetter.from_json((await sub.next_msg(timeout=5)).data)
    finally:
        await sub.unsubscribe()
    assert letter.truncated and letter.reason.startswith("contract:")
    assert (letter.stream, letter.stream_sequence) == ("CANDLES", ack.seq)
    assert letter.headers["Nats-Msg-Id"] == "huge-1"
    prefix = base64.b64decode(letter.body)
    assert 0 < len(prefix) < len(body) and body.startswith(prefix)
    original = await js.get_msg("CANDLES", letter.stream_sequence)
    assert original.data == body, "the whole original is still in its stream"
    info = await js.consumer_info("CANDLES", f"h-{symbol}")
    assert info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0
