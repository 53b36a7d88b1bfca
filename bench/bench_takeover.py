"""Takeover and rebalance times of partitioned replicas and hot standbys (issue 21), over real servers.

Self-contained: NATS, PostgreSQL and Redis of its own (``coinpilot.embedded``; or PostgreSQL at
``--database-url``), one fresh database (dropped at the end), fresh streams and Redis. Services
run as processes (``coinpilot run <stage>``, each replica its own ``COINPILOT_MEMBER_ID``), with the
lease and heartbeat given (defaults: the production 10 s / 2 s). The bench watches every ack the
consumers send (``$JS.ACK.>``: stream, durable, when) and the stage's lease bucket (a KV watch:
which member holds which partition, when), so "handled by the new owner" is the first ack on the
partition's durable after the new owner's lease appeared.

  [1] partitioned takeover  ``--replicas`` indicator replicas (``COINPILOT_PARTITIONS=--partitions``),
                            real candles of ``shared/data`` (5 symbols; the bundled sample's 2 when
                            absent) published at ``--rate`` candles/s. ``--rounds`` times: kill -9
                            of the owner of a busy partition -> its lease taken by another replica,
                            and the first candle of that partition acked by the new owner; then a
                            new replica joins (a rebalance) and, with everyone balanced again, one
                            replica leaves with SIGTERM (its partitions handed over) and a new one
                            joins again.
  [2] rebalance             the joins and leaves of [1]: start of the process (or SIGTERM) ->
                            partitions balanced in the lease bucket, and -> first message acked by
                            the joiner (or by a new owner of a partition the leaver held).
  [3] standby takeover      risk with ``COINPILOT_STANDBY=true``, 2 replicas, entry signals of real
                            candles at ``--signal-rate``/s; ``--rounds`` times: kill -9 of the active
                            -> the lease taken by the standby, and the first signal it acks (risk
                            approves or rejects each, mostly ORDER_PENDING; either is handled); a
                            new standby is started before the next round.

A kill lands at a random point of the owner's renewal cycle, so kill -> lease taken varies by up to
a heartbeat (plus a membership round on a loaded machine); "last renewal -> lease taken" (from the
bucket's history) is lease + the taker's next heartbeat.

Prints p50 / max per measure with the bound (lease + 2 heartbeats, ``LeaseTimes.takeover_bound``),
peak RSS per stage and the bench's wall time. Asserts nothing about time.
Usage: python bench/bench_takeover.py [--lease 10] [--heartbeat 2] [--rounds 5] [--replicas 3]
       [--partitions 8] [--rate 25] [--signal-rate 5] [--skip partitioned|standby]
       [--database-url URL] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.demo import ServiceProcess, child_env, sample_files, wait_ready
from bench.bench_replay import (
    MIB,
    create_database,
    drop_database,
    machine,
    peak_memory_bytes,
    percentile,
    reset_bus,
    reset_redis,
)
from coinpilot.bus.membership import LeaseTimes, bucket_name
from coinpilot.bus.partitions import partition_durable, partition_of
from coinpilot.bus.publisher import Bus
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Contract, EntrySignal, IndicatorSnapshot, MinuteCandle, Regime
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from coinpilot.embedded import EmbeddedStack, free_port

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WARM_FROM = datetime(2023, 4, 1, tzinfo=UTC)  # every file of shared/data has candles from here
FLOW_FROM = datetime(2023, 4, 10, tzinfo=UTC)  # 9 days warmed: the regime's 200 closed hours
FLOW_TO = datetime(2023, 4, 20, tzinfo=UTC)
CANDLE_DURABLE = "indicator-candles"  # the indicator's, per partition <durable>-p<n> on CANDLES
SIGNAL_DURABLE = "risk-signals"
SERVICE_ENV = {
    "COINPILOT_COLLECTOR_UPBIT_ENABLED": "false",
    "COINPILOT_LLM_MODE_SOURCE": "rules",
    "COINPILOT_LOG_LEVEL": "INFO",
}
WAIT = 120.0  # seconds any one step may take before the bench gives up on it


# -- what the servers tell: acks and leases ---------------------------------------------------------


class AckLog:
    """Every ack of every durable, as the bench received it: (when, durable)."""

    def __init__(self) -> None:
        self.acks: list[tuple[float, str]] = []

    async def on_ack(self, msg: Msg) -> None:
        if msg.data not in (b"", b"+ACK"):
            return  # +NAK, +WPI (in progress), +TERM: not a message handled
        tokens = msg.subject.split(".")
        if len(tokens) == 9:
            durable = tokens[3]
        elif len(tokens) >= 11:
            durable = tokens[5]
        else:
            return
        self.acks.append((time.monotonic(), durable))

    async def first(self, durable: str, after: float, timeout: float = WAIT) -> float | None:
        """When the first ack of ``durable`` at or after ``after`` came; None when none in ``timeout``."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            acks = self.acks
            for t, d in acks[start:]:
                if d == durable and t >= after:
                    return t
            start = len(acks)
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)


class Leases:
    """A stage's lease bucket as watched: after each change, when and who held which partition."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.owners: dict[int, str] = {}
        self.members_seen: list[tuple[float, str]] = []  # (when, member) of each member key write
        self.history: list[tuple[float, dict[int, str]]] = []  # (when, owners) after each lease write
        self.writes: list[tuple[float, int, str]] = []  # (when, partition, owner) of each lease write
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    @classmethod
    async def watch(cls, js: JetStreamContext, stage: str) -> Leases:
        deadline = time.monotonic() + WAIT
        while True:  # the bucket is created by the stage's first replica
            try:
                kv = await js.key_value(bucket_name(stage))
                break
            except BucketNotFoundError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        leases = cls(kv)
        leases._watcher = await kv.watchall()
        leases._task = asyncio.create_task(leases._follow(leases._watcher))
        return leases

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:  # ends when the watcher is stopped
            if entry is None:  # the initial values are done
                continue
            now = time.monotonic()
            kind, _, key = entry.key.partition(".")
            deleted = entry.operation in ("DEL", "PURGE")
            if kind == "m" and not deleted:
                self.members_seen.append((now, key))
            elif kind == "l" and key.isdigit():
                if deleted or not entry.value:
                    self.owners.pop(int(key), None)
                else:
                    self.owners[int(key)] = entry.value.decode()
                    self.writes.append((now, int(key), self.owners[int(key)]))
                self.history.append((now, dict(self.owners)))

    async def stop(self) -> None:
        """Unsubscribe while the follower still drains the watcher's queue (a full queue blocks
        the subscription's callback, and with it the unsubscribe), then let the follower end."""
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watcher.stop(), 10)
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)

    async def when(
        self, holds: Callable[[Mapping[int, str]], bool], after: float, timeout: float = WAIT
    ) -> tuple[float, dict[int, str]]:
        """The first lease change at or after ``after`` that makes ``holds`` true, and the owners then."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            history = self.history
            for t, owners in history[start:]:
                if t >= after and holds(owners):
                    return t, owners
            start = len(history)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"lease bucket {self.kv._name}: not reached in {timeout:.0f}s: {self.owners}"
                )
            await asyncio.sleep(0.02)

    def last_written(self, partition: int, owner: str, before: float) -> float | None:
        """When ``owner`` last wrote ``partition``'s lease (took or renewed it) before ``before``."""
        writes = [t for t, p, o in self.writes if t < before and (p, o) == (partition, owner)]
        return writes[-1] if writes else None

    async def member_seen(self, member: str, after: float) -> float:
        deadline = time.monotonic() + WAIT
        while True:
            for t, m in self.members_seen:
                if m == member and t >= after:
                    return t
            if time.monotonic() > deadline:
                raise TimeoutError(f"member {member} never wrote its key")
            await asyncio.sleep(0.02)


def busy_held(owners: Mapping[int, str], member: str, busy: Sequence[int]) -> bool:
    return any(owners.get(p) == member for p in busy)


def balanced(partitions: int, members: set[str]) -> Callable[[Mapping[int, str]], bool]:
    """Every partition held, by exactly ``members``, each holding n // m or one more."""
    low = partitions // len(members)
    high = low + (1 if partitions % len(members) else 0)

    def holds(owners: Mapping[int, str]) -> bool:
        if len(owners) != partitions or set(owners.values()) != members:
            return False
        counts = [sum(1 for o in owners.values() if o == m) for m in members]
        return all(low <= c <= high for c in counts)

    return holds


# -- the load: candles or signals at a steady rate -------------------------------------------------


def flow_candles() -> tuple[list[MinuteCandle], list[MinuteCandle], str]:
    """(warm-up, flow, where from): ``shared/data``'s five markets, or the bundled sample."""
    files = sorted(SHARED_DATA.glob("*_USDT-1m-2023*.csv.gz"))
    if files:
        candles = load_candles(files, start=WARM_FROM, end=FLOW_TO)
        where = f"{SHARED_DATA} ({len(files)} files)"
        cut = FLOW_FROM
    else:
        candles = load_candles(sample_files())
        where = "the bundled sample"
        cut = candles[0].ts_open + (candles[-1].ts_open - candles[0].ts_open) * 0.8
    return [c for c in candles if c.ts_open < cut], [c for c in candles if c.ts_open >= cut], where


def entry_signal(candle: MinuteCandle) -> EntrySignal:
    """A plausible entry on ``candle`` (its close, MA(20) at the close): risk decides it either way."""
    snapshot = IndicatorSnapshot(
        ts_event=candle.ts_event,
        symbol=candle.symbol,
        candle=candle,
        regime=Regime.BULL,
        ma_20=float(candle.close),
        bars_seen=200,
    )
    return EntrySignal(
        ts_event=candle.ts_event,
        symbol=candle.symbol,
        price=Decimal(candle.close),
        regime=Regime.BULL,
        snapshot=snapshot,
    )


async def publish_steadily(
    bus: Bus,
    candles: Sequence[MinuteCandle],
    rate: float,
    run_id: str,
    message: Callable[[MinuteCandle], Contract] = lambda c: c,
) -> int:
    """Publish ``message(candle)`` of each candle in order, ``rate`` per second, until cancelled
    (or the candles run out)."""
    began = time.monotonic()
    for i, candle in enumerate(candles):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await bus.publish(message(candle), run_id=run_id)
    print(f"  NOTE: the flow ran out after {len(candles):,} messages; later rounds see no traffic")
    return len(candles)


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Replicas:
    """The processes of one stage, by member id; peak memory read before each one ends."""

    stage: str
    stack: EmbeddedStack
    workdir: Path
    env: dict[str, str]
    live: dict[str, ServiceProcess] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    count: int = 0

    def start(self) -> str:
        member = f"{self.stage}-{self.count}"
        self.count += 1
        port = free_port()
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{member}.log", "ab")  # noqa: SIM115 - the child owns it
        env = child_env(self.stack, port, self.workdir) | self.stack.nats_env(self.stage) | self.env
        env["COINPILOT_MEMBER_ID"] = member
        self.started_at[member] = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "apps.cli.main", "run", self.stage],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.live[member] = ServiceProcess(member, port, proc)
        return member

    async def ready(self, members: Sequence[str] | None = None) -> None:
        await wait_ready([self.live[m] for m in members or list(self.live)], timeout=WAIT)

    def note_memory(self) -> None:
        for member, svc in self.live.items():
            mem = peak_memory_bytes(svc.proc.pid)
            if mem is not None:
                self.peak_rss[member] = max(mem[0], self.peak_rss.get(member, 0))

    async def end(self, member: str, how: signal.Signals) -> tuple[float, float]:
        """Send ``how`` to ``member``; (when sent, when the process had exited)."""
        self.note_memory()
        svc = self.live.pop(member)
        sent = time.monotonic()
        svc.proc.send_signal(how)
        await asyncio.to_thread(svc.proc.wait)
        return sent, time.monotonic()

    def stop_all(self) -> None:
        self.note_memory()
        for svc in self.live.values():
            svc.proc.send_signal(signal.SIGTERM)
        for svc in self.live.values():
            try:
                svc.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
        self.live.clear()


# -- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """Seconds per measure, printed as n / p50 / max."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)

    def add(self, measure: str, seconds: float | None) -> None:
        if seconds is None:
            self.missing[measure] = self.missing.get(measure, 0) + 1
        else:
            self.samples.setdefault(measure, []).append(seconds)

    def print(self, title: str) -> None:
        print(f"  {title:<72} {'n':>3} {'p50 s':>7} {'max s':>7}")
        for measure, values in self.samples.items():
            ordered = sorted(values)
            note = f"  ({self.missing[measure]} without a sample)" if measure in self.missing else ""
            print(
                f"  {measure:<72} {len(ordered):>3} {percentile(ordered, 50):7.2f} {ordered[-1]:7.2f}{note}"
            )
        for measure, n in self.missing.items():
            if measure not in self.samples:
                print(f"  {measure:<72} {0:>3}       -       -  ({n} without a sample)")


def since(start: float, end: float | None) -> str:
    return "-" if end is None else f"{end - start:.2f}s"


# -- the bench ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.times = LeaseTimes(lease_seconds=args.lease, heartbeat_seconds=args.heartbeat)
        self.stack = EmbeddedStack(workdir / "servers", database_url=args.database_url)
        self.base_url = ""
        self.database_name = ""
        self.database_url = ""
        self.nc: nats.NATS | None = None
        self.js: JetStreamContext | None = None
        self.acks = AckLog()
        self.peak_rss: dict[str, int] = {}

    async def start(self, warm: Sequence[MinuteCandle]) -> None:
        self.stack.start()
        assert self.stack.database_url and self.stack.nats_url and self.stack.redis_url
        self.base_url = self.stack.database_url
        operator = self.stack.nats_credentials("operator")
        self.nc = await nats.connect(self.stack.nats_url, name="coinpilot-bench-takeover", **operator)
        self.js = self.nc.jetstream()
        await self.nc.subscribe(
            "$JS.ACK.>", cb=self.acks.on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        self.database_name = f"cp_bench_takeover_{uuid.uuid4().hex[:8]}"
        self.database_url = await create_database(self.base_url, self.database_name)
        await upgrade(self.database_url)
        db = Database(self.database_url)
        try:
            started = time.perf_counter()
            written = await copy_candles(db, warm)
        finally:
            await db.dispose()
        print(f"warm-up: {written:,} candles into market_data (COPY) in {time.perf_counter() - started:.1f}s")

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.database_name:
            await drop_database(self.base_url, self.database_name)
        self.stack.stop()

    async def fresh_bus(self) -> None:
        assert self.js is not None and self.stack.redis_url
        await reset_bus(self.js)
        for stage in ("indicator", "risk"):
            with contextlib.suppress(Exception):
                await self.js.delete_key_value(bucket_name(stage))
        await reset_redis(self.stack.redis_url)

    def replicas(self, stage: str, env: dict[str, str]) -> Replicas:
        lease = {
            "COINPILOT_DATABASE_URL": self.database_url,
            "COINPILOT_PARTITION_LEASE_SECONDS": f"{self.args.lease:g}",
            "COINPILOT_PARTITION_HEARTBEAT_SECONDS": f"{self.args.heartbeat:g}",
        }
        return Replicas(stage, self.stack, self.workdir / stage, SERVICE_ENV | lease | env)

    def keep_memory(self, replicas: Replicas) -> None:
        replicas.note_memory()
        if replicas.peak_rss:
            self.peak_rss[replicas.stage] = max(replicas.peak_rss.values())

    # -- [1] and [2] ------------------------------------------------------------------------------
    async def partitioned(self, flow: Sequence[MinuteCandle]) -> None:
        assert self.js is not None
        args, n = self.args, self.args.partitions
        symbols = sorted({c.symbol for c in flow})
        busy = sorted({partition_of(s, n) for s in symbols})
        print(
            f"\n[1] partitioned takeover and [2] rebalance: indicator x{args.replicas}, {n} partitions "
            f"(busy: {', '.join(map(str, busy))} for {', '.join(symbols)}), {args.rate:g} candles/s, "
            f"lease {args.lease:g}s heartbeat {args.heartbeat:g}s: bound {self.times.takeover_bound:g}s "
            "+ the consumer's reset"
        )
        await self.fresh_bus()
        env = {"COINPILOT_PARTITIONS": str(n), "COINPILOT_SYMBOLS": ",".join(symbols)}
        stage = self.replicas("indicator", env)
        figures = Figures()
        flow_task: asyncio.Task[int] | None = None
        leases: Leases | None = None
        try:
            started = time.monotonic()
            for _ in range(args.replicas):
                stage.start()
            await stage.ready()
            leases = await Leases.watch(self.js, "indicator")
            members = set(stage.live)
            await leases.when(balanced(n, members), 0.0)
            print(f"  {args.replicas} replicas ready and balanced in {time.monotonic() - started:.1f}s")
            bus = Bus(self.js, "operator")
            flow_task = asyncio.create_task(
                publish_steadily(bus, flow, args.rate, f"bench-takeover-{uuid.uuid4().hex[:6]}")
            )
            for round_ in range(1, args.rounds + 1):
                p = busy[(round_ - 1) % len(busy)]
                await self.takeover_round(round_, stage, leases, p, figures)
                await self.join(stage, leases, busy, figures, "after the kill")
                victim = next(m for m in sorted(stage.live) if busy_held(leases.owners, m, busy))
                await self.leave(stage, leases, victim, busy, figures)
                await self.join(stage, leases, busy, figures, "after the leave")
            figures.print("kill -9 / join / SIGTERM leave, in seconds")
        finally:
            if flow_task is not None:
                flow_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flow_task
            if leases is not None:
                await leases.stop()
            stage.stop_all()
            self.keep_memory(stage)

    async def steady(self, partition: int, after: float) -> None:
        """Wait until ``partition``'s owner has acked a candle after ``after``."""
        durable = partition_durable(CANDLE_DURABLE, partition)
        if await self.acks.first(durable, after) is None:
            raise TimeoutError(f"no ack on {durable}: is the flow running?")

    async def takeover_round(
        self, round_: int, stage: Replicas, leases: Leases, p: int, figures: Figures
    ) -> None:
        n = self.args.partitions
        await self.steady(p, time.monotonic())
        victim = leases.owners[p]
        held = sorted(q for q, o in leases.owners.items() if o == victim)
        killed, dead = await stage.end(victim, signal.SIGKILL)
        written = leases.last_written(p, victim, killed)
        taken, _ = await leases.when(lambda o: o.get(p, victim) != victim, killed)
        acked = await self.acks.first(partition_durable(CANDLE_DURABLE, p), taken)
        rest = set(stage.live)
        all_moved, _ = await leases.when(balanced(n, rest), killed)
        print(
            f"  round {round_}: kill -9 {victim} (held {held}; exited in {dead - killed:.3f}s; "
            f"p{p}'s lease last renewed {since(written or killed, killed)} before): "
            f"p{p} taken by {leases.owners.get(p)} after {since(killed, taken)}, "
            f"first candle of p{p} acked {since(killed, acked)}; "
            f"all {len(held)} of its partitions owned again {since(killed, all_moved)}"
        )
        figures.add("takeover: kill -9 -> the partition's lease taken by another", taken - killed)
        figures.add(
            "takeover: the dead owner's last renewal -> lease taken by another",
            None if written is None else taken - written,
        )
        figures.add(
            "takeover: kill -9 -> first message of it acked by the new owner",
            None if acked is None else acked - killed,
        )
        figures.add("takeover: kill -9 -> all the dead one's partitions owned again", all_moved - killed)

    async def join(
        self, stage: Replicas, leases: Leases, busy: Sequence[int], figures: Figures, why: str
    ) -> None:
        n = self.args.partitions
        joiner = stage.start()
        began = stage.started_at[joiner]
        await stage.ready([joiner])
        ready = time.monotonic()
        member = await leases.member_seen(joiner, began)
        done, owners = await leases.when(balanced(n, set(stage.live)), began)
        mine = sorted(p for p, o in owners.items() if o == joiner)
        firsts: list[float] = []
        for p in mine:
            if p in busy:
                taken, _ = await leases.when(lambda o, p=p: o.get(p) == joiner, began)
                acked = await self.acks.first(partition_durable(CANDLE_DURABLE, p), taken)
                if acked is not None:
                    firsts.append(acked)
        first = min(firsts) if firsts else None
        print(
            f"  join {why}: {joiner} started; ready {ready - began:.2f}s, "
            f"its member key {since(began, member)}, "
            f"balanced {since(began, done)} (took {mine}), first message acked by it {since(began, first)}"
            + ("" if firsts else " (it took only idle partitions)")
        )
        figures.add("join: process start -> partitions balanced", done - began)
        figures.add("join: member key written -> partitions balanced", done - member)
        figures.add(
            "join: process start -> first message acked by the joiner",
            None if first is None else first - began,
        )

    async def leave(
        self, stage: Replicas, leases: Leases, victim: str, busy: Sequence[int], figures: Figures
    ) -> None:
        n = self.args.partitions
        held = sorted(p for p, o in leases.owners.items() if o == victim)
        for p in held:
            if p in busy:
                await self.steady(p, time.monotonic())
        sent, exited = await stage.end(victim, signal.SIGTERM)
        done, _ = await leases.when(balanced(n, set(stage.live)), sent)
        firsts: list[float] = []
        for p in held:
            if p in busy:
                taken, _ = await leases.when(lambda o, p=p: o.get(p, victim) != victim, sent)
                acked = await self.acks.first(partition_durable(CANDLE_DURABLE, p), taken)
                if acked is not None:
                    firsts.append(acked)
        first = min(firsts) if firsts else None
        print(
            f"  leave: SIGTERM {victim} (held {held}): exited {exited - sent:.2f}s, "
            f"partitions balanced over the rest {since(sent, done)}, "
            f"first message of them acked by a new owner {since(sent, first)}"
        )
        figures.add("leave: SIGTERM -> partitions balanced over the rest", done - sent)
        figures.add(
            "leave: SIGTERM -> first message acked by a new owner", None if first is None else first - sent
        )

    # -- [3] ------------------------------------------------------------------------------------
    async def standby(self, flow: Sequence[MinuteCandle]) -> None:
        assert self.js is not None
        args = self.args
        print(
            "\n[3] standby takeover: risk x2 (COINPILOT_STANDBY=true), "
            f"{args.signal_rate:g} entry signals/s, "
            f"lease {args.lease:g}s heartbeat {args.heartbeat:g}s: bound {self.times.takeover_bound:g}s "
            "+ the start-up as the active one"
        )
        await self.fresh_bus()
        symbols = sorted({c.symbol for c in flow})
        stage = self.replicas("risk", {"COINPILOT_STANDBY": "true", "COINPILOT_SYMBOLS": ",".join(symbols)})
        figures = Figures()
        flow_task: asyncio.Task[int] | None = None
        leases: Leases | None = None
        try:
            started = time.monotonic()
            stage.start()
            stage.start()
            await stage.ready()
            leases = await Leases.watch(self.js, "risk")
            await leases.when(lambda o: o.get(0) in stage.live, 0.0)
            print(f"  2 replicas ready, one active, in {time.monotonic() - started:.1f}s")
            bus = Bus(self.js, "operator")
            run_id = f"bench-standby-{uuid.uuid4().hex[:6]}"
            flow_task = asyncio.create_task(
                publish_steadily(bus, flow, args.signal_rate, run_id, entry_signal)
            )
            for round_ in range(1, args.rounds + 1):
                active = leases.owners[0]
                if await self.acks.first(SIGNAL_DURABLE, time.monotonic()) is None:
                    raise TimeoutError(f"{active} acks no signal")
                standby = next(m for m in stage.live if m != active)
                await leases.member_seen(standby, time.monotonic() - self.args.heartbeat * 1.5)
                killed, dead = await stage.end(active, signal.SIGKILL)
                written = leases.last_written(0, active, killed)
                taken, _ = await leases.when(lambda o, a=active: o.get(0, a) != a, killed)
                acked = await self.acks.first(SIGNAL_DURABLE, taken)
                print(
                    f"  round {round_}: kill -9 {active} (exited in {dead - killed:.3f}s; lease last renewed "
                    f"{since(written or killed, killed)} before): lease taken by {leases.owners.get(0)} "
                    f"after {since(killed, taken)}, first signal acked by it {since(killed, acked)}"
                )
                figures.add("standby: kill -9 of the active -> lease taken by the standby", taken - killed)
                figures.add(
                    "standby: the active's last renewal -> lease taken by the standby",
                    None if written is None else taken - written,
                )
                figures.add(
                    "standby: lease taken -> first signal acked (start-up as the active)",
                    None if acked is None else acked - taken,
                )
                figures.add(
                    "standby: kill -9 of the active -> first signal acked by the new active",
                    None if acked is None else acked - killed,
                )
                if round_ < args.rounds:
                    fresh = stage.start()
                    await stage.ready([fresh])
            figures.print("kill -9 of the active risk, in seconds")
        finally:
            if flow_task is not None:
                flow_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flow_task
            if leases is not None:
                await leases.stop()
            stage.stop_all()
            self.keep_memory(stage)


def process_age() -> float:
    """Seconds since this process started (``/proc/self/stat`` start time against the uptime)."""
    stat = Path("/proc/self/stat").read_text()
    started_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--lease", type=float, default=10.0, help="COINPILOT_PARTITION_LEASE_SECONDS (production: 10)"
    )
    p.add_argument(
        "--heartbeat", type=float, default=2.0, help="COINPILOT_PARTITION_HEARTBEAT_SECONDS (production: 2)"
    )
    p.add_argument("--rounds", type=int, default=5, help="kills (and joins, leaves) per phase")
    p.add_argument("--replicas", type=int, default=3, help="indicator replicas in [1] (2 or more)")
    p.add_argument("--partitions", type=int, default=8, help="COINPILOT_PARTITIONS in [1]")
    p.add_argument("--rate", type=float, default=25.0, help="candles/s published in [1]")
    p.add_argument("--signal-rate", type=float, default=5.0, help="entry signals/s published in [3]")
    p.add_argument("--skip", choices=("partitioned", "standby"), action="append", default=[])
    p.add_argument(
        "--database-url", default=None, help="PostgreSQL to use (a fresh database is created and dropped)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (service logs)")
    args = p.parse_args(argv)
    LeaseTimes(lease_seconds=args.lease, heartbeat_seconds=args.heartbeat)  # refuses what a replica would
    if args.replicas < 2:
        p.error("--replicas must be 2 or more")
    return args


async def main(argv: Sequence[str]) -> None:
    began = time.perf_counter()
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cp-bench-takeover-"))
    bench = Bench(args, workdir)
    try:
        print(f"machine: {machine()}")
        warm, flow, where = flow_candles()
        print(f"candles: {where}; {len(warm):,} warm market_data, {len(flow):,} to publish")
        await bench.start(warm)
        if "partitioned" not in args.skip:
            await bench.partitioned(flow)
        if "standby" not in args.skip:
            await bench.standby(flow)
    finally:
        await bench.stop()
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        "\npeak RSS (VmHWM) of the largest replica: "
        + ", ".join(f"{stage} {rss / MIB:.0f} MiB" for stage, rss in bench.peak_rss.items())
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"bench process peak RSS {own:.0f} MiB; wall time {time.perf_counter() - began:.0f}s, "
        f"{process_age():.0f}s from the process's start (interpreter and imports included) to here"
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
