"""A durable pull consumer's loop: fetch what is there, run the ladder on it in order, repeat.

Our own loop rather than FastStream's subscriber: FastStream hands a fetched batch to concurrent
tasks (we need one at a time, in order), and its batch mode waits for a full batch or the
timeout (we need a lone message handled at once). Each round waits for one message, then takes
the rest of what the consumer had pending at that moment (the message's own ``num_pending``),
so a quiet stream costs one lingering request and a backlog is taken in runs of ``batch_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from coinpilot.bus import Bus, Consumer, stream_for_subject
from coinpilot.bus.consumer import process_batch

log = logging.getLogger("coinpilot.runtime")

IDLE_WAIT_SECONDS = 1.0  # one lingering pull request; the loop re-issues it (and notices a stop)
REST_WAIT_SECONDS = 0.25  # for the pending rest, normally delivered at once


class PullLoop:
    """Feeds one consumer's messages to the ladder; ``stop`` lets the batch in hand finish."""

    def __init__(
        self,
        js: JetStreamContext,
        bus: Bus,
        consumer: Consumer,
        *,
        batch_size: int,
        max_deliver: int,
        ack_wait: float,
    ) -> None:
        self.js = js
        self.bus = bus
        self.consumer = consumer
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling = False
        self._stopping = False

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.consumer.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # the ladder counts deliveries and dead-letters; the server never drops
            max_ack_pending=self.batch_size * 4,
        )

    async def start(self) -> None:
        self._sub = await self.js.pull_subscribe(
            self.consumer.subject,
            durable=self.consumer.durable,
            stream=stream_for_subject(self.consumer.subject).name,
            config=self.config(),
        )
        self._task = asyncio.create_task(self._run(), name=f"pull-{self.bus.service}-{self.consumer.durable}")

    async def stop(self) -> None:
        """No new fetch; a batch being handled finishes (and is acked) first."""
        self._stopping = True
        if self._task is None:
            return
        if not self._handling:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                batch = await self._fetch()
                if batch:
                    await process_batch(batch, self.consumer, self.bus, self.max_deliver)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost or reconnecting: the client reconnects
                log.warning("%s: pulling from %s failed: %s", self.bus.service, self.consumer.durable, exc)
                await asyncio.sleep(0.5)
            finally:
                self._handling = False

    async def _fetch(self) -> list[Msg]:
        """Wait for one message, then take what was pending behind it (up to the batch size).

        From the first message on, the round counts as handling: a stop waits for it to finish
        rather than abandoning fetched messages to the ack timeout.
        """
        assert self._sub is not None
        try:
            first = await self._sub.fetch(1, timeout=IDLE_WAIT_SECONDS)
        except TimeoutError:  # nats-py raises its own subclass or asyncio's
            return []
        self._handling = True
        rest = min(_pending_after(first[-1]), self.batch_size - len(first))
        if rest <= 0:
            return first
        try:
            return first + await self._sub.fetch(rest, timeout=REST_WAIT_SECONDS)
        except TimeoutError:  # another replica took them
            return first


def _pending_after(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_pending)
    except Exception:
        return 0
