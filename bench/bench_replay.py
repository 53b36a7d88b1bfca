"""The seven services as separate processes over real servers: throughput, per-stage latency, memory.

Self-contained: NATS, PostgreSQL and Redis of its own (``coinpilot.embedded``; or PostgreSQL at
``--database-url``), a fresh database per phase (dropped at the end), fresh streams and Redis.

  [1] throughput  ``market_data`` warmed with the candles minus the last ``--hours`` (bundled
                  sample by default: 24 h x 2 symbols = 2,880 candles replayed), the seven services
                  started, the rest replayed at ``--pace max``; wall time from the first publish
                  until every durable consumer has drained. Then the proof nothing was lost
                  (IndicatorSnapshots of the run == candles, ``market_data`` holds every candle,
                  DLQ empty) and where the time went (CPU seconds per process during the replay,
                  handler seconds scraped from each service's /metrics).
  [2] latency     bundled sample, warmed up to 2023-03-27 00:00; 00:00 -> ``--latency-from``
                  replayed at pace max (a run under way: the agent's hourly context of the run,
                  positions open, so the window has entries and exits), then ``--latency-candles``
                  at ``--latency-pace`` (800 at x240 = 8 candles/s: 2023-03-27 11:50 .. 18:29, three
                  fills; far below the throughput of [1]) while a core-NATS subscriber on ``>``
                  records every publish's subject, trace id and Published-At; per trace id, the
                  latency of each stage.
  [3] memory      VmHWM of each service process at the end of each phase.

``--profile strategy`` runs that service under cProfile in [1] and prints where its time went (it
slows the service: the throughput figure of that run is not comparable). Prints figures; asserts
nothing about time. The machine is shared: the CPU table shows what other processes took.
Usage: python bench/bench_replay.py [--hours 24] [--candles-file F ...] [--database-url URL]
       [--latency-from 2023-03-27T11:50] [--latency-candles 800] [--latency-pace x240]
       [--skip throughput|latency] [--profile SERVICE] [--replicas N [--partitions P]] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import nats
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.demo import (
    ServiceProcess,
    child_env,
    sample_files,
    split_warmup,
    start_service,
    start_services,
    stop_services,
    wait_ready,
)
from coinpilot.bus import ensure_streams
from coinpilot.bus import headers as h
from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from coinpilot.embedded import EmbeddedStack, free_port
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.service_names import SERVICES

LATENCY_WARM_END = datetime(2023, 3, 27, tzinfo=UTC)
LATENCY_FROM = datetime(2023, 3, 27, 11, 50, tzinfo=UTC)
SERVICE_ENV = {
    "COINPILOT_COLLECTOR_UPBIT_ENABLED": "false",
    "COINPILOT_LLM_MODE_SOURCE": "rules",
    "COINPILOT_LOG_LEVEL": "WARNING",
}
#: With ``--replicas N`` every stage runs N replicas, each by its own rule (issue 21): partitioned
#: by symbol, on the shared durables, or as hot standbys (one active, the rest idle on a lease).
PARTITIONED = ("collector", "indicator", "strategy")
SHARED = ("agent", "notifier")
STANDBY = ("risk", "executor")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def partition_env(partitions: int) -> dict[str, str]:
    """Partitioned replicas, with the lease and heartbeat the e2e tests use."""
    return {
        "COINPILOT_PARTITIONS": str(partitions),
        "COINPILOT_PARTITION_LEASE_SECONDS": "6",
        "COINPILOT_PARTITION_HEARTBEAT_SECONDS": "1",
    }


def standby_env() -> dict[str, str]:
    """Hot standbys, with the partitions' lease and heartbeat."""
    leases = partition_env(1)
    del leases["COINPILOT_PARTITIONS"]
    return leases | {"COINPILOT_STANDBY": "true"}


# -- processes: CPU seconds and peak memory from /proc ------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, user+system CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, int(rest[1]), (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def peak_memory_bytes(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in bytes."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {
        k: int(v.split()[0]) * 1024
        for k, _, v in (ln.partition(":") for ln in lines)
        if k in ("VmHWM", "VmRSS")
    }
    return values.get("VmHWM", 0), values.get("VmRSS", 0)


@dataclass
class ProcessGroups:
    """Which processes are whose: the services, this bench (the publisher), the three servers."""

    services: Sequence[ServiceProcess]
    postmaster_file: Path | None

    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for svc in self.services:
            stat = proc_stat(svc.proc.pid)
            out[svc.name] = out.get(svc.name, 0.0) + (stat[2] if stat else 0.0)  # replicas add up
        me = os.getpid()
        out["bench (publisher)"] = proc_stat(me)[2]  # type: ignore[index]
        postmaster = self._postmaster()
        servers: dict[str, float] = defaultdict(float)
        for pid in all_pids():
            stat = proc_stat(pid)
            if stat is None:
                continue
            comm, ppid, cpu = stat
            if ppid == me and comm in ("nats-server", "redis-server"):
                servers[comm] += cpu
            elif postmaster is not None and (pid == postmaster or ppid == postmaster):
                servers["postgres"] += cpu
        out.update(servers)
        return out

    def _postmaster(self) -> int | None:
        if self.postmaster_file is None or not self.postmaster_file.exists():
            return None
        return int(self.postmaster_file.read_text().split()[0])


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (other users' work included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


# -- servers: a fresh database, fresh streams, an empty Redis per phase ---------------------------


def admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(base_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_dsn(base_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(base_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn(base_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def reset_bus(js: JetStreamContext) -> None:
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    await ensure_streams(js)


async def reset_redis(url: str) -> None:
    client = aioredis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# -- metrics scraped from the services ---------------------------------------------------------


async def handler_seconds(services: Sequence[ServiceProcess]) -> list[tuple[str, str, float, float]]:
    """(service, subject pattern, messages, seconds) of ``coinpilot_handler_seconds``."""
    rows: list[tuple[str, str, float, float]] = []
    async with httpx.AsyncClient(timeout=5) as client:
        for svc in services:
            body = (await client.get(f"http://127.0.0.1:{svc.port}/metrics")).text
            sums: dict[str, float] = defaultdict(float)
            counts: dict[str, float] = defaultdict(float)
            for family in text_string_to_metric_families(body):
                if family.name != "coinpilot_handler_seconds":
                    continue
                for sample in family.samples:
                    subject = sample.labels.get("subject", "")
                    if sample.name.endswith("_sum"):
                        sums[subject] += sample.value
                    elif sample.name.endswith("_count"):
                        counts[subject] += sample.value
            rows.extend((svc.name, s, counts[s], sums[s]) for s in sorted(counts))
    return rows


# -- JetStream checks ----------------------------------------------------------------------------


async def run_messages(js: JetStreamContext, stream: str, subject: str, run_id: str) -> tuple[int, int]:
    """(messages, distinct Nats-Msg-Id) of ``run_id`` on ``subject``, read with an ephemeral consumer."""
    total = await subject_count(js, stream, subject)
    if total == 0:
        return 0, 0
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    seen = 0
    ours = 0
    ids: set[str] = set()
    try:
        while seen < total:
            for msg in await sub.fetch(min(1000, total - seen), timeout=10):
                seen += 1
                headers = h.of_message(msg.headers)
                if headers.get(h.RUN_ID) == run_id:
                    ours += 1
                    ids.add(headers.get(h.MSG_ID, ""))
    finally:
        await sub.unsubscribe()
    return ours, len(ids)


async def subject_count(js: JetStreamContext, stream: str, subject: str) -> int:
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def stream_counts(js: JetStreamContext) -> dict[str, int]:
    return {s.config.name: s.state.messages for s in await js.streams_info()}


async def run_fills(database_url: str, run_id: str, window_start: datetime) -> list[str]:
    """The run's ledger, to tell which fills fell in the paced window."""
    db = Database(database_url)
    try:
        async with db.session() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT executed_at, symbol, side FROM trading_history WHERE run_id = :r "
                        "ORDER BY executed_at, symbol"
                    ),
                    {"r": run_id},
                )
            ).all()
    finally:
        await db.dispose()
    marks = [
        f"{ts:%H:%M} {symbol} {side}{'' if ts > window_start else ' (context prefix)'}"
        for ts, symbol, side in rows
    ]
    return ["  fills of the run (trading_history, event time): " + ("; ".join(marks) or "none")]


async def market_rows(database_url: str, replay: Sequence[MinuteCandle]) -> int:
    db = Database(database_url)
    try:
        async with db.session() as s:
            return int(
                (
                    await s.execute(
                        text(
                            "SELECT count(*) FROM market_data WHERE interval = '1m' AND symbol = ANY(:syms) "
                            "AND timestamp >= :a AND timestamp <= :b"
                        ),
                        {
                            "syms": sorted({c.symbol for c in replay}),
                            "a": replay[0].ts_open,
                            "b": replay[-1].ts_open,
                        },
                    )
                ).scalar_one()
            )
    finally:
        await db.dispose()


# -- latency --------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Every message of one run seen by a core-NATS subscriber on ``>``: (subject, trace id, sent)."""

    run_id: str
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    async def record(self, msg: Msg) -> None:
        headers = h.of_message(msg.headers)
        if msg.reply.startswith("$JS.ACK.") or not headers or headers.get(h.RUN_ID) != self.run_id:
            return  # a JetStream delivery to a consumer is a copy of a publish already seen
        self.seen.append((msg.subject, headers.get(h.TRACE_ID, ""), headers.get(h.PUBLISHED_AT, "")))


STAGES = (
    "candle -> snapshot       (indicator)",
    "snapshot -> signal       (strategy)",
    "signal -> order          (risk)",
    "proposed -> ai decision  (agent, AI stage)",
    "approved -> fill         (executor)",
    "candle -> fill, excl. AI (agent hop removed)",
    "candle -> fill, all",
)


def stage_latencies(
    seen: Sequence[tuple[str, str, str]], traces: set[str]
) -> dict[str, list[tuple[float, str]]]:
    """(seconds, trace id) per stage, one sample per trace id that reached both ends of the stage."""
    sent: dict[str, dict[str, datetime]] = defaultdict(dict)
    for subject, trace, published in seen:
        if trace not in traces or not published:
            continue
        kind = subject_kind(subject)
        if kind is not None:
            sent[trace].setdefault(kind, datetime.fromisoformat(published))
    out: dict[str, list[tuple[float, str]]] = {s: [] for s in STAGES}
    for trace, t in sent.items():
        candle, snap, signal = t.get("candle"), t.get("snapshot"), t.get("signal")
        proposed, approved, rejected = t.get("proposed"), t.get("approved"), t.get("rejected")
        decision, fill = t.get("decision"), t.get("fill")
        risk_out = proposed or min((x for x in (approved, rejected) if x is not None), default=None)
        agent_hop = approved - proposed if proposed and approved else timedelta(0)
        spans = (
            (candle, snap, timedelta(0)),
            (snap, signal, timedelta(0)),
            (signal, risk_out, timedelta(0)),
            (proposed, decision, timedelta(0)),
            (approved, fill, timedelta(0)),
            (candle, fill, agent_hop),
            (candle, fill, timedelta(0)),
        )
        for stage, (start, end, minus) in zip(STAGES, spans, strict=True):
            if start is not None and end is not None:
                out[stage].append(((end - start - minus).total_seconds(), trace))
    return out


def subject_kind(subject: str) -> str | None:
    for prefix, kind in (
        ("candles.1m.", "candle"),
        ("indicators.1m.", "snapshot"),
        ("signals.", "signal"),
        ("orders.proposed.", "proposed"),
        ("orders.approved.", "approved"),
        ("orders.rejected.", "rejected"),
        ("ai.decisions.", "decision"),
        ("fills.", "fill"),
    ):
        if subject.startswith(prefix):
            return kind
    return None


def fill_traces(seen: Sequence[tuple[str, str, str]], traces: set[str]) -> list[str]:
    """Trace ids of the fills, marked BUY (went through the agent) or SELL (risk approved it)."""
    proposed = {t for subject, t, _ in seen if subject.startswith("orders.proposed.")}
    return [
        f"{t} ({'BUY, via the agent' if t in proposed else 'SELL, approved by risk'})"
        for subject, t, _ in seen
        if subject.startswith("fills.") and t in traces
    ]


def profile_group(filename: str, function: str) -> str:
    """Where a profiled function lives: a package, the stdlib, our code, or a builtin by kind."""
    if filename == "~":
        if "epoll" in function:
            return "(idle: waiting in epoll)"
        if "socket" in function:
            return "socket syscalls (send/recv)"
        return "builtins"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for marker in ("/libs/coinpilot/", "/services/"):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            head = rest.split("/", 1)[0] if "/" in rest else rest.removesuffix(".py")
            return f"{marker.strip('/').split('/')[-1]}.{head}"
    if "/asyncio/" in filename:
        return "asyncio"
    return "stdlib"


def print_profile(service: str, path: Path, top: int = 15) -> None:
    """Internal time of the profiled service by package, then its hottest functions (idle excluded)."""
    if not path.exists():
        print(f"  (no profile of {service} written: did it exit on SIGTERM?)")
        return
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    by_group: dict[str, float] = defaultdict(float)
    rows: list[tuple[float, int, str]] = []
    for (filename, line, function), (_, calls, tottime, _, _) in stats.items():
        group = profile_group(filename, function)
        by_group[group] += tottime
        if not group.startswith("(idle"):
            rows.append((tottime, calls, f"{Path(filename).name}:{line}({function})"))
    busy = sum(v for k, v in by_group.items() if not k.startswith("(idle"))
    idle = by_group.get("(idle: waiting in epoll)", 0.0)
    print(
        f"  cProfile of {service}, whole process life (start-up included; profiler overhead inflates it): "
        f"{busy:.1f}s busy, {idle:.1f}s idle in epoll"
    )
    for group, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        if not group.startswith("(idle") and seconds >= 0.01 * busy:
            print(f"    {group:<32} {seconds:7.2f}s  {seconds / busy:6.1%}")
    print(f"  hottest functions by internal time (top {top}):")
    for tottime, calls, where in sorted(rows, reverse=True)[:top]:
        print(f"    {tottime:7.2f}s {calls:>9,} calls  {where}")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


# -- one phase ------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    warm: list[MinuteCandle]
    replay: list[MinuteCandle]
    database_url: str = ""
    database_name: str = ""
    services: list[ServiceProcess] = field(default_factory=list)
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)
    profile: str | None = None
    profile_path: Path = Path()


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.stack = EmbeddedStack(workdir / "servers", database_url=args.database_url)
        self.base_url = ""
        self.nc: nats.NATS | None = None
        self.js: JetStreamContext | None = None

    async def start(self) -> None:
        self.stack.start()
        assert self.stack.database_url and self.stack.nats_url and self.stack.redis_url
        self.base_url = self.stack.database_url
        # the operator: the bench resets streams and reads every consumer; services are themselves
        operator = self.stack.nats_credentials("operator")
        self.nc = await nats.connect(self.stack.nats_url, name="coinpilot-bench", **operator)
        self.js = self.nc.jetstream()

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        self.stack.stop()

    async def prepare(self, phase: Phase) -> None:
        """A fresh database warmed with ``phase.warm``, fresh streams, empty Redis, services ready."""
        assert self.js is not None and self.stack.redis_url
        phase.database_name = f"cp_bench_{phase.name}_{uuid.uuid4().hex[:8]}"
        phase.database_url = await create_database(self.base_url, phase.database_name)
        await upgrade(phase.database_url)
        db = Database(phase.database_url)
        try:
            written = await copy_candles(db, phase.warm)
        finally:
            await db.dispose()
        await reset_bus(self.js)
        await reset_redis(self.stack.redis_url)
        print(f"  warm-up: {written:,} candles into market_data (COPY) of a fresh database")
        started = time.perf_counter()
        env = SERVICE_ENV | {"COINPILOT_DATABASE_URL": phase.database_url}
        logs = self.workdir / phase.name
        replicas = self.args.replicas
        symbols = ",".join(sorted({c.symbol for c in phase.replay}))  # a partitioned stage reads these only
        partitioned = env | partition_env(self.args.partitions) | {"COINPILOT_SYMBOLS": symbols}
        for name in SERVICES:
            if name == phase.profile:
                phase.services.append(self.start_profiled(name, logs, env, phase.profile_path))
            elif replicas > 1:
                rule = env | standby_env() if name in STANDBY else env
                rule = partitioned if name in PARTITIONED else rule
                for k in range(replicas):
                    member = rule | {"COINPILOT_MEMBER_ID": f"{name}-{k}"}
                    phase.services.append(start_service(name, self.stack, logs, extra_env=member))
            else:
                phase.services.extend(start_services(self.stack, logs, [name], extra_env=env))
        await wait_ready(phase.services, timeout=180)
        copies = f", {replicas} replicas of each (risk and executor: 1 active)" if replicas > 1 else ""
        print(f"  seven services{copies} started and ready in {time.perf_counter() - started:.1f}s")

    def start_profiled(self, name: str, logs: Path, env: dict[str, str], out: Path) -> ServiceProcess:
        """``coinpilot run <name>`` under cProfile; the stats are written when SIGTERM ends it."""
        logs.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
        argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "apps.cli.main", "run", name]
        proc = subprocess.Popen(
            argv, env=child_env(self.stack, port, logs) | env, stdout=log, stderr=subprocess.STDOUT
        )
        return ServiceProcess(name, port, proc)

    async def finish(self, phase: Phase) -> None:
        for svc in phase.services:
            mem = peak_memory_bytes(svc.proc.pid)
            if mem is not None:
                phase.memory[svc.name] = max(mem, phase.memory.get(svc.name, mem))  # the largest replica's
        stop_services(phase.services)
        await self.drop(phase)

    async def drop(self, phase: Phase) -> None:
        if phase.database_name:
            await drop_database(self.base_url, phase.database_name)
            phase.database_name = ""

    def postmaster_file(self) -> Path | None:
        if self.args.database_url:
            return None
        return self.workdir / "servers" / "pgdata" / "postmaster.pid"

    # -- [1] ------------------------------------------------------------------------------------
    async def throughput(self, phase: Phase, hours: float) -> None:
        assert self.js is not None
        js = self.js
        symbols = sorted({c.symbol for c in phase.replay})
        print(
            f"\n[1] throughput at pace max: {len(phase.replay):,} candles "
            f"({hours:g} h x {len(symbols)} symbols: {', '.join(symbols)})"
        )
        await self.prepare(phase)
        run_id = f"bench-max-{uuid.uuid4().hex[:6]}"
        groups = ProcessGroups(phase.services, self.postmaster_file())
        cpu_before, machine_before = groups.cpu_seconds(), machine_cpu_seconds()
        published_at: list[float] = []
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if done == total:
                published_at.append(time.perf_counter() - t0)

        result = await replay_candles(
            js, phase.replay, run_id=run_id, pace=parse_pace("max"), drain_timeout=900, progress=progress
        )
        cpu_after, machine_after = groups.cpu_seconds(), machine_cpu_seconds()
        wall = result.seconds
        publish = published_at[0] if published_at else float("nan")
        print(
            f"  {result.candles:,} candles from the first publish to drained in {wall:.2f}s: "
            f"{result.candles / wall:,.0f} candles/s"
        )
        print(
            f"  (all published after {publish:.2f}s: {result.candles / publish:,.0f} candles/s offered; "
            f"drained {wall - publish:.2f}s later)"
        )

        snapshots, distinct = await run_messages(js, "INDICATORS", "indicators.1m.>", run_id)
        stored = await market_rows(phase.database_url, phase.replay)
        dlq = await subject_count(js, "DLQ", "dlq.>")
        n = len(phase.replay)
        print("  checks:")
        print(
            f"    {'OK ' if snapshots == n else 'BAD'} IndicatorSnapshots of the run in INDICATORS: "
            f"{snapshots:,} ({distinct:,} distinct ids), candles replayed {n:,}"
        )
        print(
            f"    {'OK ' if stored == n else 'BAD'} market_data 1m rows in the replay window: "
            f"{stored:,} of {n:,}"
        )
        print(f"    {'OK ' if dlq == 0 else 'BAD'} DLQ stream: {dlq} messages")
        counts = await stream_counts(js)
        print("  stream messages: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))

        print(
            f"  where the time went: CPU seconds per process during the {wall:.1f}s replay "
            f"({os.cpu_count()} CPUs = {wall * (os.cpu_count() or 1):.1f} CPU-s available)"
        )
        spent = {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after}
        ours = sum(spent.values())
        machine = machine_after - machine_before
        for name, cpu in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(
                f"    {name:<18} {cpu:7.2f} CPU-s  {cpu / wall:6.0%} of one core  "
                f"{cpu / n * 1e3:6.2f} ms/candle"
            )
        print(
            f"    {'all of the above':<18} {ours:7.2f} CPU-s; whole machine {machine:.2f} CPU-s "
            f"(others' work: {max(0.0, machine - ours):.2f})"
        )
        print("  handler time per consumer (coinpilot_handler_seconds: parse + handle + publish + ack)")
        for service, subject, count, seconds in await handler_seconds(phase.services):
            if count:
                print(
                    f"    {service:<10} {subject:<20} {count:8,.0f} msgs  {seconds:7.2f}s  "
                    f"mean {seconds / count * 1e3:7.2f} ms"
                )
        await self.finish(phase)
        if phase.profile:
            print_profile(phase.profile, phase.profile_path)

    # -- [2] ------------------------------------------------------------------------------------
    async def latency(self, phase: Phase, prefix: list[MinuteCandle], pace: str) -> None:
        assert self.js is not None and self.nc is not None
        js = self.js
        first, last = phase.replay[0].ts_open, phase.replay[-1].ts_open
        context = (
            f"after {len(prefix):,} candles ({prefix[0].ts_open:%H:%M} .. {prefix[-1].ts_open:%H:%M}) at "
            "pace max: a run under way (hourly context, positions)"
            if prefix
            else "from the start of the run (no context prefix)"
        )
        print(
            f"\n[2] latency at pace {pace}: {len(phase.replay)} candles {first:%Y-%m-%d %H:%M} .. "
            f"{last:%H:%M} UTC, {context}"
        )
        await self.prepare(phase)
        run_id = f"bench-lat-{uuid.uuid4().hex[:6]}"
        if prefix:
            started = time.perf_counter()
            await replay_candles(js, prefix, run_id=run_id, pace=parse_pace("max"), drain_timeout=900)
            print(f"  context prefix replayed and drained in {time.perf_counter() - started:.1f}s")
        recorder = Recorder(run_id)
        sub = await self.nc.subscribe(">", cb=recorder.record, pending_msgs_limit=-1, pending_bytes_limit=-1)
        result = await replay_candles(
            js, phase.replay, run_id=run_id, pace=parse_pace(pace), drain_timeout=900
        )
        await self.nc.flush()
        await sub.unsubscribe()
        print(
            f"  paced window replayed and drained in {result.seconds:.1f}s "
            f"({result.candles / result.seconds:.1f} candles/s offered)"
        )
        traces = {c.msg_id() for c in phase.replay}
        kinds = defaultdict(int)
        for subject, trace, _ in recorder.seen:
            if trace in traces and (kind := subject_kind(subject)) is not None:
                kinds[kind] += 1
        print("  messages of the window: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
        if not kinds.get("fill"):
            print("  NOTE: no fill in this window; choose another --latency-from")
        for trace in fill_traces(recorder.seen, traces):
            print(f"    fill of {trace}")
        stages = stage_latencies(recorder.seen, traces)
        print(
            f"  {'stage (ms, Published-At to Published-At)':<46} {'n':>5} {'p50':>8} {'p95':>8} "
            f"{'p99':>8} {'max':>8}"
        )
        slowest: list[str] = []
        for stage in STAGES:
            samples = sorted(stages[stage])
            if not samples:
                print(f"  {stage:<46} {0:>5}")
                continue
            values = [v for v, _ in samples]
            ms = [percentile(values, p) * 1e3 for p in (50, 95, 99)] + [values[-1] * 1e3]
            print(f"  {stage:<46} {len(values):>5} " + " ".join(f"{v:8.1f}" for v in ms))
            worst = ", ".join(f"{t.removeprefix('candle:1m:')} {v * 1e3:.0f}" for v, t in samples[-3:][::-1])
            slowest.append(f"    {stage.split('(')[-1].rstrip(')'):<18} {worst}")
        print("  slowest samples per stage (candle, ms):")
        print("\n".join(slowest))
        for line in await run_fills(phase.database_url, run_id, first):
            print(line)
        await self.finish(phase)


# -- inputs, versions, main ----------------------------------------------------------------------


def running_nats_binary() -> str:
    """The executable of the nats-server this bench started (several may be installed)."""
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat[0] == "nats-server" and stat[1] == os.getpid():
            return os.readlink(f"/proc/{pid}/exe")
    return shutil.which("nats-server") or "nats-server"


def versions(pg_version: str, redis_version: str) -> str:
    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        nats_version = subprocess.run(
            [running_nats_binary(), "--version"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        nats_version = "nats-server ?"
    return (
        f"python {platform.python_version()}, coinpilot {v('coinpilot')}, {nats_version}, {pg_version}, "
        f"redis {redis_version}, faststream {v('faststream')}, nats-py {v('nats-py')}, "
        f"SQLAlchemy {v('SQLAlchemy')}, asyncpg {v('asyncpg')}, redis-py {v('redis')}, "
        f"pydantic {v('pydantic')}"
    )


async def server_versions(bench: Bench) -> tuple[str, str]:
    conn = await asyncpg.connect(admin_dsn(bench.base_url))
    try:
        pg = str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()
    client = aioredis.from_url(bench.stack.redis_url or "")
    try:
        redis_version = str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()
    return f"PostgreSQL {pg}", redis_version


def machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    affinity = len(os.sched_getaffinity(0))
    return (
        f"nproc {affinity} (os.cpu_count {os.cpu_count()}), {model}, load average {load}, "
        f"{platform.platform()}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--candles-file",
        action="append",
        type=Path,
        default=[],
        help="candle file(s) for the throughput phase (default: the bundled sample)",
    )
    p.add_argument("--hours", type=float, default=24.0, help="hours replayed in the throughput phase")
    p.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL to use (a fresh database is created on it and dropped)",
    )
    p.add_argument(
        "--latency-from",
        type=datetime.fromisoformat,
        default=LATENCY_FROM,
        help="first candle of the paced window (bundled sample, UTC)",
    )
    p.add_argument("--latency-candles", type=int, default=800)
    p.add_argument("--latency-pace", default="x240")
    p.add_argument(
        "--profile",
        choices=SERVICES,
        help="run this service under cProfile in the throughput phase and print its hottest functions "
        "(slows that service: the throughput figure is then not comparable)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="replicas of every stage: collector, indicator and strategy partitioned by symbol, "
        "agent and notifier on shared durables, risk and executor as hot standbys",
    )
    p.add_argument("--partitions", type=int, default=8, help="partitions with --replicas above 1")
    p.add_argument("--skip", choices=("throughput", "latency"), action="append", default=[])
    p.add_argument("--keep", action="store_true", help="keep the work directory (service logs)")
    return p.parse_args(argv)


def latency_inputs(
    start: datetime, n: int
) -> tuple[list[MinuteCandle], list[MinuteCandle], list[MinuteCandle]]:
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    candles = load_candles(sample_files())
    warm = [c for c in candles if c.ts_open < LATENCY_WARM_END]
    prefix = [c for c in candles if LATENCY_WARM_END <= c.ts_open < start]
    window = [c for c in candles if c.ts_open >= start][:n]
    return warm, prefix, window


def print_memory(phases: Sequence[Phase]) -> None:
    print("\n[3] peak memory per service process (VmHWM at the end of each phase, MiB)")
    print(f"  {'service':<10} " + " ".join(f"{p.name:>12}" for p in phases))
    for name in SERVICES:
        cells = []
        for p in phases:
            mem = p.memory.get(name)
            cells.append(f"{mem[0] / MIB:12.1f}" if mem else f"{'-':>12}")
        print(f"  {name:<10} " + " ".join(cells))
    totals = [sum(m[0] for m in p.memory.values()) / MIB for p in phases]
    print(f"  {'sum':<10} " + " ".join(f"{t:12.1f}" for t in totals))


async def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    began = time.perf_counter()
    bench = Bench(args, workdir)
    phases: list[Phase] = []
    try:
        print(f"machine: {machine()}")
        await bench.start()
        pg_version, redis_version = await server_versions(bench)
        print(f"versions: {versions(pg_version, redis_version)}")
        print(
            f"servers: private NATS + Redis (wheels); PostgreSQL "
            f"{'at --database-url' if args.database_url else 'private (pgserver wheel)'}; work dir {workdir}"
        )
        if "throughput" not in args.skip:
            files = args.candles_file or sample_files()
            warm, replay = split_warmup(load_candles(files), args.hours)
            phase = Phase("throughput", warm, replay, profile=args.profile)
            phase.profile_path = workdir / "profile.pstats"
            phases.append(phase)
            await bench.throughput(phase, args.hours)
        if "latency" not in args.skip:
            warm, prefix, window = latency_inputs(args.latency_from, args.latency_candles)
            phase = Phase("latency", warm, window)
            phases.append(phase)
            await bench.latency(phase, prefix, args.latency_pace)
        print_memory(phases)
    finally:
        for phase in phases:
            stop_services(phase.services)
            await bench.drop(phase)
        await bench.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nbench total {time.perf_counter() - began:.0f}s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
