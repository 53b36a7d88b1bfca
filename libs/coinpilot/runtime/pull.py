"""A durable pull consumer's loop: take the next run of messages, run the ladder on it in order, repeat.

Our own loop rather than FastStream's subscriber: FastStream hands a fetched batch to concurrent
tasks (we need one at a time, in order), and its batch mode waits for a full batch or the
timeout (we need a lone message handled at once). The pull requests are ours too
(``pull_inbox.py``): a run is what the consumer had pending when its first message came, up to
``batch_size``, so a quiet stream costs one lingering request a second and a backlog is taken in
runs of ``batch_size``.

A run whose message fails transiently (a dependency down) waits in place (``Patience``, see
``coinpilot.bus.consumer``): no new run is taken meanwhile, so order is kept, and ``retrying``
tells readiness. A stop ends the wait: that message and those behind it are handed back (NAK).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from coinpilot.bus import Bus, Consumer, stream_for_subject
from coinpilot.bus.consumer import Patience, process_batch
from coinpilot.runtime.pull_inbox import PullInbox

log = logging.getLogger("coinpilot.runtime")

IDLE_WAIT_SECONDS = 1.0  # a pull request's life if nothing comes; then the loop asks again (and sees a stop)
REST_WAIT_SECONDS = 0.25  # for the pending rest of a run, normally delivered at once


class PullLoop:
    """Feeds one consumer's messages to the ladder; ``stop`` lets the batch in hand finish."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        bus: Bus,
        consumer: Consumer,
        *,
        batch_size: int,
        max_deliver: int,
        ack_wait: float,
    ) -> None:
        self.nc = nc
        self.js = js
        self.bus = bus
        self.consumer = consumer
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self._inbox: PullInbox | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling = False
        self._stopping = False
        # waits out an outage in place; keeps the held messages' ack timers alive 5 times per ack_wait
        self.patience = Patience(keepalive_every=ack_wait / 5, hand_back_delay=IDLE_WAIT_SECONDS + 0.25)

    @property
    def retrying(self) -> bool:
        """True while a message waits out a transient failure (the service is not ready)."""
        return self.patience.retrying

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
        stream = stream_for_subject(self.consumer.subject).name
        await self._ensure_consumer(stream)
        self._inbox = PullInbox(
            self.nc,
            stream=stream,
            durable=self.consumer.durable,
            batch_size=self.batch_size,
            request_expires=IDLE_WAIT_SECONDS,
            rest_wait=REST_WAIT_SECONDS,
        )
        await self._inbox.open()
        self.patience.also_held = self._inbox.buffered
        self._task = asyncio.create_task(self._run(), name=f"pull-{self.bus.service}-{self.consumer.durable}")

    async def _ensure_consumer(self, stream: str) -> None:
        """Create the durable consumer unless it exists (an existing one is used as it is)."""
        try:
            await self.js.consumer_info(stream, self.consumer.durable)
        except NotFoundError:
            config = self.config()
            config.name = self.consumer.durable
            config.filter_subject = self.consumer.subject
            await self.js.add_consumer(stream, config=config)

    async def stop(self, *, drain: bool = False) -> None:
        """No new run; a run being handled finishes (and is acked) first, unless it is waiting out
        an outage: then the waiting message and those behind it are handed back (NAK). Messages
        that arrived but were never taken are handed back too, for another replica or the next
        start. ``drain``: also wait out the open pull request (``PullInbox.close``) and hand back
        what it brings: a partition handed to another replica."""
        self._stopping = True
        self.patience.stop()
        if self._task is None:
            return
        if not self._handling:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._inbox is not None:
            for msg in await self._inbox.close(drain=drain):
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def abandon(self) -> None:
        """Stop now, the run in hand too, acking and NAKing nothing: the partition's lease is gone
        and its next owner resets the consumer to the ack floor (``runtime/partitioned.py``)."""
        self._stopping = True
        self.patience.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._inbox is not None:
            await self._inbox.close()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                batch = await self._fetch()
                if batch:
                    await process_batch(batch, self.consumer, self.bus, self.max_deliver, self.patience)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost or reconnecting: the client reconnects
                log.warning("%s: pulling from %s failed: %s", self.bus.service, self.consumer.durable, exc)
                await asyncio.sleep(0.5)
            finally:
                self._handling = False

    async def _fetch(self) -> list[Msg]:
        """The next run, or ``[]`` after ``IDLE_WAIT_SECONDS`` without a message.

        From the run's return on, the round counts as handling: a stop waits for it to finish
        rather than abandoning taken messages to the ack timeout.
        """
        assert self._inbox is not None
        run = await self._inbox.take(IDLE_WAIT_SECONDS)
        self._handling = bool(run)
        return run
