"""A standby taking over resets its durables on its own NATS identity (real nats-server with the
generated authorization): the reset recreates the durable the way the pull loop creates it
(named, with its filter), which is what the identity's grant pins, not the legacy
``CONSUMER.DURABLE.CREATE`` the server refuses it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import nats
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from coinpilot.bus import Consumer, parser_for
from coinpilot.bus.connect import PermissionWatch
from coinpilot.bus.publisher import Bus
from coinpilot.contracts import Contract, EntrySignal
from coinpilot.runtime.pull import PullLoop
from coinpilot.runtime.standby import reset_to_first_unacked
from tests.support.servers import NatsProcess, isolated_nats

SUBJECT, DURABLE = "signals.*.*", "risk-signals"  # risk's own durable (services/risk/app.py)


async def never_called(_: object) -> Sequence[Contract]:
    raise AssertionError("the test pulls by hand")


async def test_a_standby_resets_a_dead_holders_durable_on_its_own_identity(
    nats_server: NatsProcess, js
) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(NotFoundError):  # a fresh durable: what this test pulls is its own
        await js.delete_consumer("SIGNALS", DURABLE)
    watch = PermissionWatch("risk-test")
    risk = await nats.connect(
        nats_server.url, user="risk", password=nats_server.passwords["risk"], error_cb=watch.on_error
    )
    try:
        risk_js = risk.jetstream()
        consumer = Consumer(SUBJECT, DURABLE, never_called, parser_for(EntrySignal))
        loop = PullLoop(
            risk, risk_js, Bus(risk_js, "risk"), consumer, batch_size=4, max_deliver=5, ack_wait=30
        )
        await loop._ensure_consumer("SIGNALS")  # as the holder's start created it
        for i in range(3):
            await js.publish("signals.entry.KRW-RESET", str(i).encode())
        sub = await risk_js.pull_subscribe_bind(DURABLE, "SIGNALS")
        held: list[Msg] = await sub.fetch(2, timeout=5)  # the holder dies holding these, un-acked
        await sub.unsubscribe()
        first = held[0].metadata.sequence.stream

        done = await reset_to_first_unacked(risk_js, loop)

        again = await risk_js.pull_subscribe_bind(DURABLE, "SIGNALS")
        redelivered = await again.fetch(1, timeout=5)
        await again.unsubscribe()
    finally:
        await risk.close()
    assert done.startswith("reset to stream sequence") and watch.violations == []
    assert redelivered[0].metadata.sequence.stream == first  # at once, not after the ack wait


async def test_a_takeover_while_nats_does_not_answer_waits_for_it_instead_of_giving_up() -> None:
    """The node is gone mid-takeover (a cluster electing a leader answers 503 or nothing at all):
    the reset asks again until NATS answers, then the dead holder's messages come first. Before,
    the first unanswered request ended the activation and the process exited, leaving no active
    replica when the other had lost its lease in the same election."""
    async with isolated_nats() as server:
        risk = await nats.connect(
            server.url,
            user="risk",
            password=server.passwords["risk"],
            reconnect_time_wait=0.2,
            max_reconnect_attempts=-1,
        )
        try:
            risk_js = risk.jetstream(timeout=1)
            consumer = Consumer(SUBJECT, DURABLE, never_called, parser_for(EntrySignal))
            loop = PullLoop(
                risk, risk_js, Bus(risk_js, "risk"), consumer, batch_size=4, max_deliver=5, ack_wait=30
            )
            await loop._ensure_consumer("SIGNALS")
            operator = await nats.connect(server.url)
            for i in range(3):
                await operator.jetstream().publish("signals.entry.KRW-WAIT", str(i).encode())
            await operator.close()
            sub = await risk_js.pull_subscribe_bind(DURABLE, "SIGNALS")
            held: list[Msg] = await sub.fetch(2, timeout=5)
            await sub.unsubscribe()

            server.stop()  # gracefully: a SIGKILL may lose the consumer's unflushed pending state
            reset = asyncio.create_task(reset_to_first_unacked(risk_js, loop, retry_every=0.2))
            await asyncio.sleep(3)  # several unanswered tries
            assert not reset.done(), "the takeover gave up while NATS did not answer"
            server.start()
            done = await asyncio.wait_for(reset, 60)

            again = await risk_js.pull_subscribe_bind(DURABLE, "SIGNALS")
            redelivered = await again.fetch(1, timeout=5)
            await again.unsubscribe()
        finally:
            await risk.close()
    assert done == f"reset to stream sequence {held[0].metadata.sequence.stream}"
    assert redelivered[0].metadata.sequence.stream == held[0].metadata.sequence.stream
