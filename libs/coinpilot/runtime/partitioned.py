"""A partitioned stage's consumers: per owned partition, one durable per consumer, filtered to
that partition's symbols; started when :class:`~coinpilot.bus.membership.Membership` takes the
partition, stopped when it releases or loses it.

Taking a partition resets each of its durables to its ack floor when anything is in flight on it
(a dead owner's unacked messages, a previous owner's hand-backs): deleted and created again from
the first unacked stream sequence, so the new owner sees the partition's messages in stream
order from the first one not handled, rather than newer ones first and the dead owner's later
(when their ack timers run out). Messages above the floor that were acked are handled again:
handlers are idempotent. A durable that does not exist yet starts where the stage's unpartitioned
durable left off (switching partitions on), or at the stream's start.

The symbols of the partitions held are kept in an :class:`~coinpilot.runtime.owned.OwnedSymbols`
for the service's own tasks (the collector polls Upbit for those only): added once a partition's
durables are ready, removed before they are stopped, so such a task stops at once on a release
or a loss.

Per-symbol memory goes with the partition: ``forget`` (the service's) drops it when the
partition is released or lost and again before it is started, so the next handling rebuilds it
from the system of record (the indicator warms from ``market_data``; the strategy's state is in
PostgreSQL and read under its row lock on every message).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from coinpilot.bus import Consumer, stream_for_subject
from coinpilot.bus.partitions import partition_durable, partition_subjects, symbols_of
from coinpilot.runtime.owned import OwnedSymbols
from coinpilot.runtime.pull import PullLoop

log = logging.getLogger("coinpilot.runtime")

Forget = Callable[[frozenset[str]], None]
MakeLoop = Callable[[Consumer], PullLoop]


async def consumer_info_or_none(js: JetStreamContext, stream: str, durable: str) -> ConsumerInfo | None:
    try:
        return await js.consumer_info(stream, durable)
    except NotFoundError:
        return None


def _first_unacked(info: ConsumerInfo) -> int:
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    return (floor or 0) + 1


async def reset_consumer(
    js: JetStreamContext, base: ConsumerConfig, stream: str, durable: str, filters: list[str], shared: str
) -> str:
    """Make ``durable`` (``filters`` on ``stream``) ready for a new owner; returns what was done.

    ``base``: the pull loop's config; ``shared``: the stage's unpartitioned durable."""
    info = await consumer_info_or_none(js, stream, durable)
    if info is not None:
        same_filters = sorted(info.config.filter_subjects or []) == sorted(filters)
        if same_filters and not info.num_ack_pending and not info.num_redelivered:
            return "kept"
        start = _first_unacked(info)
        await js.delete_consumer(stream, durable)
        done = f"reset to stream sequence {start}"
    else:
        old = await consumer_info_or_none(js, stream, shared)
        start = _first_unacked(old) if old is not None else 1
        done = f"created from stream sequence {start}"
    config = dataclasses.replace(
        base,
        name=durable,
        durable_name=durable,
        filter_subject=None,
        filter_subjects=filters,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
    )
    await js.add_consumer(stream, config=config)
    return done


class PartitionedConsumers:
    """The pull loops of the partitions this replica owns."""

    def __init__(
        self,
        js: JetStreamContext,
        consumers: Sequence[Consumer],
        *,
        partitions: int,
        symbols: Sequence[str],
        make_loop: MakeLoop,
        forget: Forget | None = None,
        on_change: Callable[[], None] | None = None,
        owned: OwnedSymbols | None = None,
    ) -> None:
        self.js = js
        self.consumers = list(consumers)
        self.n = partitions
        self.symbols = tuple(symbols)
        self.make_loop = make_loop
        self.forget = forget
        self.on_change = on_change
        self.owned = owned
        self.loops: dict[int, list[PullLoop]] = {}

    @property
    def retrying(self) -> bool:
        return any(loop.retrying for loops in self.loops.values() for loop in loops)

    def symbols_of(self, p: int) -> tuple[str, ...]:
        return symbols_of(p, self.n, self.symbols)

    async def acquire(self, p: int) -> None:
        symbols = self.symbols_of(p)
        self._forget(symbols)
        loops: list[PullLoop] = []
        self.loops[p] = loops
        if not symbols:
            return  # more partitions than symbols: this one is empty, owned but idle
        for consumer in self.consumers:
            stream = stream_for_subject(consumer.subject).name
            durable = partition_durable(consumer.durable, p)
            filters = partition_subjects(consumer.subject, symbols)
            loop = self.make_loop(dataclasses.replace(consumer, durable=durable))
            done = await reset_consumer(self.js, loop.config(), stream, durable, filters, consumer.durable)
            log.info("partition %d: %s %s (%s)", p, durable, done, ", ".join(symbols))
            await loop.start()
            loops.append(loop)
        if self.owned is not None:
            self.owned.add(symbols)
        self._changed()

    def durables(self) -> list[tuple[str, str]]:
        """(subject pattern, durable) of every partition durable this replica reads now."""
        return [(loop.consumer.subject, loop.consumer.durable) for ls in self.loops.values() for loop in ls]

    async def release(self, p: int) -> None:
        """Hand ``p`` over: its runs in hand finish and are acked, the rest handed back."""
        self._disown(p)
        await asyncio.gather(*(loop.stop(drain=True) for loop in self.loops.pop(p, [])))
        self._forget(self.symbols_of(p))
        self._changed()

    async def lose(self, p: int) -> None:
        """The lease is gone: stop at once, ack nothing."""
        self._disown(p)
        for loop in self.loops.pop(p, []):
            with contextlib.suppress(Exception):
                await loop.abandon()
        self._forget(self.symbols_of(p))
        self._changed()

    def _disown(self, p: int) -> None:
        if self.owned is not None:
            self.owned.discard(self.symbols_of(p))

    def _forget(self, symbols: Sequence[str]) -> None:
        if self.forget is not None and symbols:
            self.forget(frozenset(symbols))

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
