"""Hot standby of a single-writer stage (risk, executor): one lease, one active replica.

Every replica of the stage competes for partition 0 of the stage's lease bucket
(``coinpilot.bus.membership`` with one partition). Only the holder runs the stage: its start-up
hook (state rebuilt from PostgreSQL, as on a restart), its consumers (the stage's own durables,
so order and exactly-once are those of one replica) and its background tasks. The others are
connected and idle; ``/readyz`` says ``standby``. The holder's death frees the lease within its
TTL; the next holder first resets each durable to its first unacknowledged message, so what the
dead one had in hand is redelivered at once and in order (not after ``ack_wait``).

A holder that loses its lease (not renewed in time) stops its consumers at once, acking nothing,
and asks the process to exit: its in-memory state is no longer the system of record's, so it
comes back as a fresh standby (the orchestrator restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from coinpilot.bus import stream_for_subject
from coinpilot.bus.membership import UNANSWERED
from coinpilot.runtime.partitioned import consumer_info_or_none
from coinpilot.runtime.pull import PullLoop

log = logging.getLogger("coinpilot.runtime")
T = TypeVar("T")

Step = Callable[[], Awaitable[None]]


async def reset_to_first_unacked(js: JetStreamContext, loop: PullLoop, *, retry_every: float = 1.0) -> str:
    """Make a durable the dead holder had messages of in hand deliver them again now, in order:
    recreated from its first unacknowledged stream sequence. Untouched when nothing is pending.

    A NATS that does not answer (a stream's leader being elected after a node was lost) is asked
    again every ``retry_every`` seconds until it does: the takeover waits rather than giving the
    stage up (the activation runs only while this replica holds the lease; losing it cancels
    this). The plan (where to start) is read once; the delete-then-create may be repeated, since
    the loop is not started yet and the same configuration is created each time."""
    consumer = loop.consumer
    stream = stream_for_subject(consumer.subject).name
    info = await _answered(
        lambda: consumer_info_or_none(js, stream, consumer.durable), consumer.durable, retry_every
    )
    if info is None:
        return "absent (created on start)"
    if not info.num_ack_pending and not info.num_redelivered:
        return "kept"
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    start = (floor or 0) + 1
    base: ConsumerConfig = loop.config()
    config = dataclasses.replace(
        base,
        name=consumer.durable,  # the named create: what the stage's NATS identity is granted
        filter_subject=consumer.subject,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
    )
    await _answered(lambda: _recreate(js, stream, config), consumer.durable, retry_every)
    return f"reset to stream sequence {start}"


async def _recreate(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    with contextlib.suppress(NotFoundError):  # gone already: an earlier try deleted it
        await js.delete_consumer(stream, config.durable_name or "")
    await js.add_consumer(stream, config=config)


async def _answered(ask: Callable[[], Awaitable[T]], durable: str, every: float) -> T:
    while True:
        try:
            return await ask()
        except UNANSWERED as exc:
            log.warning("taking over %s: NATS did not answer (%s); asking again", durable, type(exc).__name__)
            await asyncio.sleep(every)


class Standby:
    """The active/standby role of one stage in this process: the membership hooks."""

    def __init__(
        self,
        js: JetStreamContext,
        loops: Sequence[PullLoop],
        *,
        on_start: Step,
        start_tasks: Step,
        stop_tasks: Step,
    ) -> None:
        self.js = js
        self.loops = list(loops)
        self.on_start = on_start
        self.start_tasks = start_tasks
        self.stop_tasks = stop_tasks
        self.active = False
        self.lost = asyncio.Event()  # set when the lease was lost: the process should exit
        self._activation: asyncio.Task[None] | None = None

    @property
    def role(self) -> str:
        return "active" if self.active else "standby"

    async def acquire(self, _: int) -> None:
        """The lease is ours: rebuild state as on a restart, then take messages. In a task of its
        own: the membership round that called this must return to keep renewing the lease while a
        slow start-up (risk loads its GARCH library and rehearses) runs."""
        self._activation = asyncio.create_task(self._activate(), name="standby-activation")

    async def _activate(self) -> None:
        try:
            for loop in self.loops:
                done = await reset_to_first_unacked(self.js, loop)
                log.info("standby taking over: %s %s", loop.consumer.durable, done)
            await self.on_start()
            for loop in self.loops:
                await loop.start()
            await self.start_tasks()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not start as the active replica; exiting to come back as a standby")
            self.lost.set()
            return
        self.active = True
        log.warning("this replica is now the active one")

    async def _stop_activation(self) -> None:
        task, self._activation = self._activation, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def release(self, _: int) -> None:
        """Hand over gracefully (stopping): the runs in hand finish and are acked."""
        self.active = False
        await self._stop_activation()
        await asyncio.gather(*(loop.stop() for loop in self.loops))
        await self.stop_tasks()

    async def lose(self, _: int) -> None:
        """The lease is gone: stop now, ack nothing, and have the process exit."""
        self.active = False
        await self._stop_activation()
        for loop in self.loops:
            with contextlib.suppress(Exception):
                await loop.abandon()
        await self.stop_tasks()
        log.error("lost the active lease: stopped taking messages; exiting to come back as a standby")
        self.lost.set()
