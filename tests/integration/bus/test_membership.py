"""Partition leases against a real NATS: members agree, a dead member's partitions move within
the bound, a newcomer gets its share, and a partition never has two owners at once, checked both
from what the members did and from the lease bucket's own history (every take, renewal and
release, with the server's timestamps, read back from its stream)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from coinpilot.bus.membership import LeaseTimes, Membership, bucket_name, open_bucket
from tests.support.proxy import TcpProxy

TIMES = LeaseTimes(lease_seconds=3.0, heartbeat_seconds=0.5, margin=0.5)
RESET_SLACK = 1.0  # what the server's expiry sweep may add to the bound


@dataclass
class Ledger:
    """Who was active on which partition when (our clock), from the members' callbacks."""

    events: list[tuple[float, str, int, str]] = field(default_factory=list)
    dead: dict[str, float] = field(default_factory=dict)

    def intervals(self) -> dict[int, list[tuple[float, float, str]]]:
        open_: dict[tuple[str, int], float] = {}
        out: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
        for at, member, p, what in self.events:
            if what == "start":
                open_[(member, p)] = at
            else:
                out[p].append((open_.pop((member, p)), at, member))
        for (member, p), start in open_.items():
            out[p].append((start, self.dead.get(member, float("inf")), member))
        return out

    def owners_now(self) -> dict[int, str]:
        return {p: iv[-1][2] for p, iv in self.intervals().items() if iv and iv[-1][1] == float("inf")}

    def assert_never_two_owners(self) -> None:
        for p, spans in self.intervals().items():
            spans.sort()
            for (_, end, a), (start, _, b) in itertools.pairwise(spans):
                assert end <= start, f"partition {p}: {a} until {end}, {b} from {start}"


@dataclass
class Member:
    name: str
    nc: Client
    membership: Membership


async def start_member(url: str, stage: str, name: str, n: int, ledger: Ledger) -> Member:
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    kv = await open_bucket(js, stage, TIMES)

    def record(what: str):
        async def hook(p: int) -> None:
            ledger.events.append((time.monotonic(), name, p, what))

        return hook

    membership = Membership(
        kv,
        js,
        member=name,
        partitions=n,
        times=TIMES,
        on_acquire=record("start"),
        on_release=record("stop"),
        on_lost=record("stop"),
    )
    await membership.start()
    return Member(name, nc, membership)


async def kill(member: Member, ledger: Ledger) -> None:
    """A kill -9: no release, no more heartbeats, the connection gone."""
    ledger.dead[member.name] = time.monotonic()
    for task in member.membership._tasks:
        task.cancel()
    for task in member.membership._tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await member.nc.close()


async def settle(ledger: Ledger, members: list[str], n: int, within: float) -> float:
    """Seconds until every partition has a live owner among ``members``, balanced."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        owners = ledger.owners_now()
        counts = [sum(1 for o in owners.values() if o == m) for m in members]
        if len(owners) == n and set(owners.values()) <= set(members) and max(counts) - min(counts) <= 1:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not settled within {within}s: {ledger.owners_now()}")


class History:
    """Every message of the lease bucket's stream, in stream order (takes, renewals, releases,
    expiry markers), read with an ordered consumer from the start."""

    def __init__(self) -> None:
        self.leases: dict[int, list[tuple[str, str, float]]] = defaultdict(list)  # p -> (op, owner, at)

    async def start(self, js, stage: str) -> None:
        async def on_msg(msg) -> None:
            prefix = f"$KV.{bucket_name(stage)}.l."
            if not msg.subject.startswith(prefix):
                return
            op = (msg.headers or {}).get("KV-Operation", "PUT")
            at = msg.metadata.timestamp.timestamp()
            self.leases[int(msg.subject.removeprefix(prefix))].append((op, msg.data.decode(), at))

        self.sub = await js.subscribe(
            f"$KV.{bucket_name(stage)}.>", cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )

    def assert_never_two_owners(self) -> list[int]:
        """A lease passes to another owner only through a release (DEL) or an expiry (no write for
        ``lease_seconds``, by the server's clock); returns the partitions that passed by expiry."""
        expired: list[int] = []
        for p, ops in self.leases.items():
            holder, last = None, 0.0
            for op, owner, at in ops:
                if op in ("DEL", "PURGE"):
                    holder = None
                    continue
                if holder not in (None, owner):
                    gap = at - last
                    assert gap >= TIMES.lease_seconds, f"partition {p}: {owner} took {holder}'s live lease"
                    expired.append(p)
                holder, last = owner, at
        return expired


def stage_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("size", [2, 3])
async def test_a_killed_members_partitions_move_within_the_bound(nats_url: str, size: int) -> None:
    n, stage, ledger = 8, stage_name(), Ledger()
    names = [f"m{i}" for i in range(size)]
    members = [await start_member(nats_url, stage, name, n, ledger) for name in names]
    audit = await nats.connect(nats_url)
    history = History()
    try:
        await history.start(audit.jetstream(), stage)
        await settle(ledger, names, n, within=4 * TIMES.heartbeat_seconds + 5)
        victim = members[-1]
        theirs = {p for p, o in ledger.owners_now().items() if o == victim.name}
        assert theirs
        killed_at = time.monotonic()
        await kill(victim, ledger)
        took = await settle(ledger, names[:-1], n, within=TIMES.takeover_bound + RESET_SLACK + 2)
        assert took <= TIMES.takeover_bound + RESET_SLACK
        for p in theirs:
            starts = [at for at, _, q, what in ledger.events if q == p and what == "start"]
            first = min(at for at in starts if at > killed_at)
            assert first - killed_at <= TIMES.takeover_bound + RESET_SLACK
        await asyncio.sleep(2 * TIMES.heartbeat_seconds)  # renewals after the move reach the audit
        ledger.assert_never_two_owners()
        assert set(history.assert_never_two_owners()) == theirs  # the victim's leases expired
    finally:
        for member in members[:-1]:
            await member.membership.stop()
            await member.nc.close()
        await audit.close()


async def test_a_joining_member_gets_its_share_and_a_leaving_one_hands_over(nats_url: str) -> None:
    n, stage, ledger = 12, stage_name(), Ledger()
    a = await start_member(nats_url, stage, "a", n, ledger)
    b = await start_member(nats_url, stage, "b", n, ledger)
    audit = await nats.connect(nats_url)
    history = History()
    try:
        await history.start(audit.jetstream(), stage)
        await settle(ledger, ["a", "b"], n, within=5)
        before = ledger.owners_now()
        c = await start_member(nats_url, stage, "c", n, ledger)
        await settle(ledger, ["a", "b", "c"], n, within=6 * TIMES.heartbeat_seconds + 3)
        after = ledger.owners_now()
        assert sum(1 for p in range(n) if before[p] != after[p]) == 4  # only the newcomer's share moved
        await b.membership.stop()  # a clean leave: released at once, not after the lease
        left_at = time.monotonic()
        await settle(ledger, ["a", "c"], n, within=4 * TIMES.heartbeat_seconds + 2)
        assert time.monotonic() - left_at < TIMES.lease_seconds  # faster than an expiry
        await asyncio.sleep(2 * TIMES.heartbeat_seconds)
        ledger.assert_never_two_owners()
        history.assert_never_two_owners()
        for member in (a, c):
            await member.membership.stop()
        assert not ledger.owners_now()
    finally:
        for member in (a, b):
            await member.nc.close()
        await audit.close()


async def test_a_member_cut_off_from_nats_stops_before_another_takes_over(nats_url: str) -> None:
    """The hard case: the owner is alive but cannot reach NATS (its connection cut), so it cannot
    renew, nor hear that its leases expired. It stops by its own clock before the server lets the
    other member take them; when it is back it rejoins and gets its share again."""
    n, stage, ledger = 6, stage_name(), Ledger()
    upstream = nats_url.rsplit(":", 1)
    proxy = TcpProxy("127.0.0.1", int(upstream[1])).start()
    a = await start_member(nats_url, stage, "a", n, ledger)
    b = await start_member(f"nats://127.0.0.1:{proxy.port}", stage, "b", n, ledger)
    audit = await nats.connect(nats_url)
    history = History()
    try:
        await history.start(audit.jetstream(), stage)
        await settle(ledger, ["a", "b"], n, within=5)
        theirs = {p for p, o in ledger.owners_now().items() if o == "b"}
        proxy.refuse()
        cut_at = time.monotonic()
        await settle(ledger, ["a"], n, within=TIMES.takeover_bound + RESET_SLACK + 2)
        stops = [at for at, m, p, what in ledger.events if m == "b" and what == "stop" and at > cut_at]
        assert len(stops) == len(theirs), "b gave up each of its partitions by its own clock"
        assert max(stops) - cut_at <= TIMES.lease_seconds - TIMES.margin + 0.5
        ledger.assert_never_two_owners()
        proxy.restore()
        await settle(ledger, ["a", "b"], n, within=10)
        await asyncio.sleep(2 * TIMES.heartbeat_seconds)
        ledger.assert_never_two_owners()
        assert set(history.assert_never_two_owners()) >= theirs  # b's leases passed to a by expiry
    finally:
        for member in (a, b):
            with contextlib.suppress(Exception):
                await member.membership.stop()
            await member.nc.close()
        await audit.close()
        proxy.close()
