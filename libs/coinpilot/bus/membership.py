"""Replicas of a stage agreeing who owns which partition: leases in a NATS KV bucket.

The bucket ``partitions-<stage>`` holds, with a TTL of ``lease_seconds`` (the bucket's max age):

- ``m.<member>``: a member's heartbeat, rewritten every ``heartbeat_seconds``; gone (expired) when
  the member stops beating.
- ``l.<partition>``: the owner's lease, the member id. Taken with ``create`` (only if absent),
  renewed with an update that names the revision it last wrote (compare-and-set: a renewal after
  someone else took it fails), released with a revision-checked delete; it expires when its owner
  stops renewing (the bucket's max age: nats-server 2.15 removes it within ~0.3 s of its age;
  with subject delete markers it took twice the age, so there are none: an expiry shows in the
  bucket's history as a silence of ``lease_seconds`` before the next owner's take).

Every heartbeat a member renews its leases, reads the members and owners, computes the
assignment (:func:`coinpilot.bus.partitions.assign`, the same in every member), releases what is
no longer its own (after its consumers stopped and acked what they had) and takes what is its own
and free (before its consumers start).

Never two active owners: a member treats a lease as its own only until ``renewed_at +
lease_seconds - margin`` by its own clock, ``renewed_at`` being when it *sent* the renewal the
server accepted, so before the server's expiry; past that deadline it abandons the partition at
once (a watchdog, even while NATS does not answer). Another member can take the lease only after
the server removed it. Takeover of a dead member's partitions: within ``lease_seconds`` (its last
lease expires) plus one heartbeat (the others notice) plus the consumer's reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from coinpilot.bus.partitions import assign

log = logging.getLogger("coinpilot.bus")

MEMBER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MEMBERS, LEASES = "m", "l"

PartitionHook = Callable[[int], Awaitable[None]]
UNANSWERED = (NoRespondersError, NoStreamResponseError, ServiceUnavailableError, TimeoutError)
"""What NATS answers (or not) while the bucket's stream has no leader: try the round again."""


def bucket_name(stage: str) -> str:
    return f"partitions-{stage}"


@dataclass(frozen=True, slots=True)
class LeaseTimes:
    """``lease_seconds``: a lease's life without renewal (the takeover bound's main part);
    ``heartbeat_seconds``: how often members renew and look; ``margin``: how long before the
    server's expiry an owner stops by its own clock (covers its stop and clock rate drift)."""

    lease_seconds: float = 10.0
    heartbeat_seconds: float = 2.0
    margin: float = 2.0

    def __post_init__(self) -> None:
        if not (self.heartbeat_seconds > 0 and self.heartbeat_seconds + self.margin < self.lease_seconds):
            raise ValueError(
                "partition leases need heartbeat_seconds + margin < lease_seconds "
                f"(have {self.heartbeat_seconds} + {self.margin} >= {self.lease_seconds})"
            )

    @property
    def takeover_bound(self) -> float:
        """Kill of an owner to its partitions taken by another member, at most (plus the reset)."""
        return self.lease_seconds + 2 * self.heartbeat_seconds


async def open_bucket(js: JetStreamContext, stage: str, times: LeaseTimes, replicas: int = 1) -> KeyValue:
    """The stage's lease bucket, created when missing (its own, so a service may create it)."""
    name = bucket_name(stage)
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=name,
            history=1,
            ttl=times.lease_seconds,
            storage=StorageType.FILE,
            replicas=replicas,
        )
        return await js.create_key_value(config)


class Membership:
    """One member's side of a stage's leases; ``on_acquire``/``on_release``/``on_lost`` start and
    stop that partition's consumers (``on_lost``: at once, without acking: the lease is gone)."""

    def __init__(
        self,
        kv: KeyValue,
        js: JetStreamContext,
        *,
        member: str,
        partitions: int,
        times: LeaseTimes,
        on_acquire: PartitionHook,
        on_release: PartitionHook,
        on_lost: PartitionHook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not MEMBER_ID.match(member):
            raise ValueError(f"member id {member!r} must match {MEMBER_ID.pattern}")
        self.kv = kv
        self.js = js
        self.member = member
        self.n = partitions
        self.times = times
        self.on_acquire = on_acquire
        self.on_release = on_release
        self.on_lost = on_lost
        self.clock = clock
        self.owned: dict[int, int] = {}  # partition -> revision of our last write of its lease
        self.renewed_at: dict[int, float] = {}  # partition -> when that write was sent (our clock)
        self._stream = f"KV_{kv._name}"
        self._lock = asyncio.Lock()  # one tick or watchdog round at a time
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """The first round, then the heartbeat. A first round NATS cannot answer yet (the bucket
        was just created with replicas and has no leader, or a node is being replaced) is tried
        again every heartbeat, as a later round would be, instead of failing the start-up: on a
        cluster, the second replica of a stage used to exit here, meeting its first replica's
        new R3 bucket before its leader was elected."""
        self._tasks = [asyncio.create_task(self._watchdog(), name=f"lease-watchdog-{self.member}")]
        while True:
            try:
                async with asyncio.timeout(self._round_seconds()):
                    await self.tick()
                break
            except UNANSWERED as exc:
                log.warning(
                    "%s: first membership round failed: %s: %s; trying again",
                    self.member,
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(self.times.heartbeat_seconds)
        self._tasks.append(asyncio.create_task(self._beat(), name=f"membership-{self.member}"))

    def _round_seconds(self) -> float:
        return max(2 * self.times.heartbeat_seconds, self.times.lease_seconds / 2)

    async def stop(self) -> None:
        """Release every partition (its consumers finish and ack first) and leave."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        async with self._lock:  # all at once: each waits out its open pull request
            await asyncio.gather(*(self._release(p) for p in sorted(self.owned)))
            with contextlib.suppress(Exception):
                await self.kv.delete(f"{MEMBERS}.{self.member}")

    # -- one round ----------------------------------------------------------------------------
    async def tick(self) -> None:
        async with self._lock:
            started = self.clock()
            await self.kv.put(f"{MEMBERS}.{self.member}", json.dumps({"at": time.time()}).encode())
            await self._renew(started)
            members, owners = await self._view()
            members.add(self.member)
            wanted = assign(self.n, members, owners)
            for p in sorted(self.owned):
                if wanted.get(p) != self.member:
                    await self._release(p)
            for p in range(self.n):
                if wanted.get(p) == self.member and p not in self.owned and p not in owners:
                    await self._take(p, started)

    async def _renew(self, started: float) -> None:
        for p, revision in sorted(self.owned.items()):
            try:
                renewed = await self.kv.update(f"{LEASES}.{p}", self.member.encode(), last=revision)
            except KeyWrongLastSequenceError:
                log.error("%s lost the lease of partition %d (expired or taken)", self.member, p)
                await self._lose(p)
                continue
            if p not in self.owned:  # the watchdog gave it up meanwhile: let it go for real
                with contextlib.suppress(Exception):
                    await self.kv.delete(f"{LEASES}.{p}", last=renewed)
                continue
            self.owned[p] = renewed
            self.renewed_at[p] = started

    async def _view(self) -> tuple[set[str], dict[int, str]]:
        """Live members and current owners, from the bucket's subjects and the leases' values."""
        info = await self.js.stream_info(self._stream, subjects_filter=">")
        prefix = f"$KV.{self.kv._name}."
        members: set[str] = set()
        owners: dict[int, str] = {}
        for subject in info.state.subjects or {}:
            kind, _, key = subject.removeprefix(prefix).partition(".")
            try:
                entry = await self.kv.get(f"{kind}.{key}")
            except KeyNotFoundError:  # deleted, expired (a marker) or gone since
                continue
            if kind == MEMBERS:
                members.add(key)
            elif kind == LEASES and key.isdigit() and entry.value:
                owners[int(key)] = entry.value.decode()
        return members, owners

    async def _take(self, p: int, started: float) -> None:
        try:
            revision = await self.kv.create(f"{LEASES}.{p}", self.member.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return  # someone else was faster, or it changed meanwhile; the next tick sees it
        self.owned[p] = revision
        self.renewed_at[p] = started
        log.info("%s took partition %d", self.member, p)
        try:
            await self.on_acquire(p)
        except Exception:
            log.exception("%s could not start partition %d; releasing it", self.member, p)
            await self._release(p)

    async def _release(self, p: int) -> None:
        revision = self.owned.get(p)
        if revision is None:
            return
        await self.on_release(p)
        self.owned.pop(p, None)
        self.renewed_at.pop(p, None)
        with contextlib.suppress(Exception):  # a lease we cannot delete expires
            await self.kv.delete(f"{LEASES}.{p}", last=revision)
        log.info("%s released partition %d", self.member, p)

    async def _lose(self, p: int) -> None:
        self.owned.pop(p, None)
        self.renewed_at.pop(p, None)
        await self.on_lost(p)

    # -- background ---------------------------------------------------------------------------
    async def _beat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.times.heartbeat_seconds)
            try:
                async with asyncio.timeout(self._round_seconds()):
                    await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: the watchdog stops what we can no longer hold
                log.warning("%s: membership round failed: %s: %s", self.member, type(exc).__name__, exc)

    async def _watchdog(self) -> None:
        """Abandon a partition once our own clock says its lease may be gone: even while a round
        hangs on NATS, so this does not take the round's lock."""
        step = min(0.25, self.times.margin / 4)
        while not self._stopping:
            await asyncio.sleep(step)
            limit = self.times.lease_seconds - self.times.margin
            for p, at in list(self.renewed_at.items()):
                if self.clock() - at > limit and p in self.owned:
                    log.error("%s: lease of partition %d not renewed in time; abandoning it", self.member, p)
                    await self._lose(p)
