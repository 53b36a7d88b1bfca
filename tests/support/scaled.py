"""The scaled deployment of issue 21 as processes, for the e2e tests that prove it.

One topology (:data:`SCALED`) for every mode: the indicator and the strategy as partitioned
replicas (``COINPILOT_PARTITIONS``), risk and the executor as hot standbys
(``COINPILOT_STANDBY``), the agent and the notifier as replicas on their shared durables, the
collector as :data:`COLLECTORS` replica(s). Each replica is ``coinpilot run <stage>`` with its own
member id (``<stage>-<index>``), metrics port and log (``logs/<stage>-<index>.log``).

The checks the modes share: every ack of the partitioned stages recorded (:class:`AckLog`) and
per symbol in stream order (:func:`check_order`); the agent's one decision per proposal and the
notifier's one post per event (:func:`check_agent_once`, :func:`check_notified_once`), all in
:func:`check_scaled_run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError
from sqlalchemy import Select, select

from apps.demo import child_env, sample_files, stop_services, wait_ready
from coinpilot.bus import headers as h
from coinpilot.bus.membership import bucket_name
from coinpilot.candle_files import load_candles
from coinpilot.contracts import AiDecision, AiVerdict, Fill, MinuteCandle, OrderProposed
from coinpilot.db import AgentDecision, Database, NotificationSent
from coinpilot.embedded import EmbeddedStack
from tests.e2e.test_parity import canonical, distributed_ledger
from tests.support.e2e_run import PreparedRun
from tests.support.fake_webhooks import FakeN8n
from tests.support.replicas import Replica, start_replica

Kind = Literal["single", "partitioned", "standby", "shared"]

COLLECTORS = 2
"""The collector's replicas; more than one makes its stage ``partitioned`` (``COINPILOT_PARTITIONS``,
the leases, its partitions checked spread before the replay, its recorder's acks checked)."""
PARTITIONS = 8
LEASE_SECONDS, HEARTBEAT_SECONDS = 6.0, 1.0
"""Risk's start-up after a takeover (its GARCH import) must fit in a lease on a loaded machine."""
SHARED_ACK_WAIT_SECONDS = 5.0
"""Shared durables (agent, notifier): what a killed replica had in hand comes again after this."""
LEASES = {
    "COINPILOT_PARTITION_LEASE_SECONDS": str(LEASE_SECONDS),
    "COINPILOT_PARTITION_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
}
ENV_OF_KIND: dict[Kind, dict[str, str]] = {
    "single": {},
    "partitioned": LEASES | {"COINPILOT_PARTITIONS": str(PARTITIONS)},
    "standby": LEASES | {"COINPILOT_STANDBY": "true"},
    "shared": {"COINPILOT_ACK_WAIT_SECONDS": str(SHARED_ACK_WAIT_SECONDS)},
}
WATCHED = {  # partitioned stage -> (stream, durable) whose acks are checked (<durable>-p<n>)
    "collector": ("CANDLES", "collector-recorder"),
    "indicator": ("CANDLES", "indicator-candles"),
    "strategy": ("INDICATORS", "strategy-indicators"),
}
WATCHED_SUBJECTS = {"CANDLES": "candles.1m.*", "INDICATORS": "indicators.1m.*"}
NOTIFIED = {  # stream -> subjects the notifier posts (every AI verdict: NOTIFY_ALL_VERDICTS)
    "FILLS": "fills.*",
    "AI": "ai.decisions.*",
    "RISK": "risk.alerts",
    "REPORTS": "reports.daily",
}
NOTIFY_ALL_VERDICTS = ",".join(AiVerdict)
REPLAY_FROM = datetime(2023, 3, 26, 11, 0, tzinfo=UTC)
REPLAY_HOURS = 14
"""The bundled sample (BTC, ETH) from 11:00 to 01:00 the next day: two trading days (they start at
00:00 UTC) with the notifier's 22:00 KST report boundary in the first, six fills (two round trips,
two positions left open); everything before it warms the database."""


def scaled_window() -> tuple[list[MinuteCandle], list[MinuteCandle]]:
    """(warm-up, replay) of the scaled runs."""
    candles = load_candles(sample_files())
    end = REPLAY_FROM + timedelta(hours=REPLAY_HOURS)
    return [c for c in candles if c.ts_open < REPLAY_FROM], [
        c for c in candles if REPLAY_FROM <= c.ts_open < end
    ]


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    replicas: int
    kind: Kind

    def members(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.replicas)]


SCALED: tuple[Stage, ...] = (
    Stage("collector", COLLECTORS, "partitioned" if COLLECTORS > 1 else "single"),
    Stage("indicator", 3, "partitioned"),
    Stage("strategy", 3, "partitioned"),
    Stage("risk", 2, "standby"),
    Stage("agent", 2, "shared"),
    Stage("executor", 2, "standby"),
    Stage("notifier", 2, "shared"),
)


def scaled(**replicas: int) -> tuple[Stage, ...]:
    """:data:`SCALED` with some stages' replica counts changed (``scaled(indicator=2)``)."""
    return tuple(replace(s, replicas=replicas.get(s.name, s.replicas)) for s in SCALED)


def stage_of(stages: Sequence[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def notifier_env(n8n: FakeN8n) -> dict[str, str]:
    """The notifier posts a replay's events to the local n8n, every AI verdict included."""
    return {
        "COINPILOT_N8N_URL": n8n.base_url,
        "COINPILOT_N8N_WEBHOOK_SECRET": n8n.secret,
        "COINPILOT_NOTIFIER_DELIVER_REPLAYS": "true",
        "COINPILOT_NOTIFIER_AI_DECISIONS": NOTIFY_ALL_VERDICTS,
    }


@dataclass
class Deployment:
    """The replicas of a topology as child processes. Each gets its kind's settings
    (:data:`ENV_OF_KIND`), then ``env`` (all of them), then ``stage_env`` (one stage's)."""

    stack: EmbeddedStack
    workdir: Path
    env: dict[str, str]
    stage_env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, Replica] = field(default_factory=dict)

    def start(self, stages: Sequence[Stage]) -> None:
        for stage in stages:
            for index in range(stage.replicas):
                self.add(stage, index)

    def add(self, stage: Stage, index: int) -> Replica:
        """``coinpilot run <stage>`` as replica ``index`` of this worktree's code: its own member
        id, port and log."""
        env = (
            child_env(self.stack, 0, self.workdir)
            | self.stack.nats_env(stage.name)
            | ENV_OF_KIND[stage.kind]
            | self.env
            | self.stage_env.get(stage.name, {})
        )
        replica = start_replica(stage.name, index, env, self.workdir / "logs")
        self.processes[replica.name] = replica
        return replica

    async def ready(self, js: JetStreamContext, stages: Sequence[Stage]) -> None:
        """Every replica ready and each partitioned stage's partitions spread over its replicas."""
        await wait_ready(list(self.processes.values()))  # type: ignore[arg-type]
        for stage in stages:
            if stage.kind == "partitioned":
                assert set(await spread(js, stage.name, stage.replicas)) == set(stage.members())

    async def kill(self, member: str) -> float:
        """SIGKILL ``member`` (no handover); returns when it is dead, as ``time.monotonic()``."""
        await asyncio.to_thread(self.processes[member].kill)
        return time.monotonic()

    def alive(self, member: str) -> bool:
        return self.processes[member].proc.poll() is None

    async def role(self, member: str) -> str | None:
        """A standby stage replica's role from its ``/readyz`` (``active`` or ``standby``)."""
        async with httpx.AsyncClient(timeout=2) as client:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                body = (await client.get(f"http://127.0.0.1:{self.processes[member].port}/readyz")).json()
                return body.get("role")
        return None

    async def active_after(self, stage: Stage, within: float = 60.0) -> tuple[str, float]:
        """The live replica of a standby stage that says ``active``, and when it first said so."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for member in stage.members():
                if member in self.processes and self.alive(member) and await self.role(member) == "active":
                    return member, time.monotonic()
            await asyncio.sleep(0.1)
        raise AssertionError(f"no replica of {stage.name} became active within {within:.0f} s")

    def log_of(self, member: str) -> str:
        return (self.workdir / "logs" / f"{member}.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_services(list(self.processes.values()))  # type: ignore[arg-type]  # SIGTERM to all, then wait
        for replica in self.processes.values():
            replica.log.close()


async def lease_holder(js: JetStreamContext, stage: str, partition: int = 0) -> str:
    """The member holding ``partition``'s lease (partition 0: a standby stage's active lease)."""
    kv = await js.key_value(bucket_name(stage))
    return (await kv.get(f"l.{partition}")).value.decode()


async def spread(js: JetStreamContext, stage: str, members: int, within: float = 30.0) -> dict[str, int]:
    """Wait until the stage's partitions are spread over ``members`` replicas (8 over 3: 3, 3, 2);
    returns each owner's count."""
    balanced = sorted(PARTITIONS // members + (1 if i < PARTITIONS % members else 0) for i in range(members))
    kv = await js.key_value(bucket_name(stage))
    deadline = time.monotonic() + within
    while True:
        owners: dict[str, int] = defaultdict(int)
        for p in range(PARTITIONS):
            with contextlib.suppress(KeyNotFoundError):
                owners[(await kv.get(f"l.{p}")).value.decode()] += 1
        if sorted(owners.values()) == balanced:
            return dict(owners)
        assert time.monotonic() < deadline, f"{stage} partitions not spread: {dict(owners)}"
        await asyncio.sleep(0.2)


class AckLog:
    """Every ack of the watched durables, in the order the server got them: (stream, durable,
    stream sequence), and when each partition durable acked (for takeover times)."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, str, int]] = []
        self.at: list[tuple[float, str]] = []  # (when, partition durable)

    async def on_ack(self, msg: Msg) -> None:
        if msg.data not in (b"", b"+ACK"):
            return
        t = msg.subject.split(".")
        if len(t) == 9:
            stream, durable, seq = t[2], t[3], t[5]
        elif len(t) >= 11:
            stream, durable, seq = t[4], t[5], t[7]
        else:
            return
        base = durable.rsplit("-p", 1)[0]
        if (stream, base) in WATCHED.values():
            self.acks.append((stream, base, int(seq)))
            self.at.append((time.monotonic(), durable))

    def first_after(self, durable: str, at: float) -> float | None:
        return min((t for t, d in self.at if d == durable and t > at), default=None)


async def stream_messages(js: JetStreamContext, stream: str, pattern: str) -> dict[int, Msg]:
    """Stream sequence -> message, for every message of ``stream`` on ``pattern``."""
    info = await js.stream_info(stream, subjects_filter=pattern)
    count = sum((info.state.subjects or {}).values())
    got: dict[int, Msg] = {}
    if not count:
        return got
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got[msg.metadata.sequence.stream] = msg
        if len(got) >= count:
            done.set()

    sub = await js.subscribe(pattern, cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await sub.unsubscribe()
    return got


async def watched_subjects(js: JetStreamContext) -> dict[str, dict[int, str]]:
    """Stream sequence -> subject of every message the watched durables read."""
    return {
        stream: {seq: m.subject for seq, m in (await stream_messages(js, stream, pattern)).items()}
        for stream, pattern in WATCHED_SUBJECTS.items()
    }


def check_order(
    acks: list[tuple[str, str, int]], subjects: dict[str, dict[int, str]], stages: Sequence[Stage]
) -> dict[str, int]:
    """Per (durable, symbol) of the partitioned ``stages``: first acks in stream order, every
    message acked; returns the repeats per durable."""
    first: dict[tuple[str, str], list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    repeats: dict[str, int] = defaultdict(int)
    for stream, durable, seq in acks:
        symbol = subjects[stream][seq].rsplit(".", 1)[-1]
        if (durable, seq) in seen:
            repeats[durable] += 1
            continue
        seen.add((durable, seq))
        first[(durable, symbol)].append(seq)
    for stage in stages:
        if stage.kind != "partitioned":
            continue
        stream, durable = WATCHED[stage.name]
        by_seq = subjects[stream]
        for symbol in {s.rsplit(".", 1)[-1] for s in by_seq.values()}:
            published = sorted(q for q, s in by_seq.items() if s.endswith(f".{symbol}"))
            assert first[(durable, symbol)] == published, f"{durable} {symbol}: handled out of publish order"
    return dict(repeats)


def of_run(messages: dict[int, Msg], run_id: str) -> list[Msg]:
    return [m for _, m in sorted(messages.items()) if h.of_message(m.headers).get(h.RUN_ID) == run_id]


async def scalars(pg_url: str, statement: Select[tuple[str]]) -> list[str]:
    db = Database(pg_url)
    try:
        async with db.session() as s:
            return list((await s.execute(statement)).scalars().all())
    finally:
        await db.dispose()


async def check_agent_once(js: JetStreamContext, pg_url: str, run_id: str) -> int:
    """One ``agent_decisions`` row and one ``ai.decisions`` message per proposed order of the run:
    none lost, none decided twice. Returns the number of proposals."""
    proposed = [
        OrderProposed.model_validate_json(m.data).order_id
        for m in of_run(await stream_messages(js, "ORDERS", "orders.proposed.*"), run_id)
    ]
    decided = Counter(
        AiDecision.model_validate_json(m.data).order_id
        for m in of_run(await stream_messages(js, "AI", "ai.decisions.*"), run_id)
    )
    rows = Counter(
        await scalars(pg_url, select(AgentDecision.order_id).where(AgentDecision.run_id == run_id))
    )
    assert Counter(proposed) == Counter(set(proposed)), "risk proposed an order twice"
    assert rows == Counter(proposed), "agent_decisions: not one row per proposed order"
    assert decided == Counter(proposed), "ai.decisions: not one decision per proposed order"
    return len(proposed)


async def check_notified_once(js: JetStreamContext, pg_url: str, run_id: str, n8n: FakeN8n) -> int:
    """Every event of the run the notifier reads was posted to n8n exactly once: its claim in
    ``notification_sent`` is there (none lost) and n8n answered as many posts as there are events
    (none posted twice). Returns the number of events."""
    expected: set[str] = set()
    for stream, pattern in NOTIFIED.items():
        for m in of_run(await stream_messages(js, stream, pattern), run_id):
            expected.add(h.of_message(m.headers)[h.MSG_ID])
    claimed = await scalars(
        pg_url,
        select(NotificationSent.event_key).where(
            NotificationSent.sink == "n8n", NotificationSent.event_key.startswith(f"{run_id}:")
        ),
    )
    assert set(claimed) == expected, f"notified {len(claimed)} of {len(expected)} events"
    posts = n8n.bodies()
    assert len(posts) == len(expected), f"{len(posts)} posts answered for {len(expected)} events"
    return len(expected)


def brief(fills: Sequence[Fill]) -> list[str]:
    return [f"{f.side} {f.symbol} {f.ts_event:%d %H:%M}" for f in fills]


async def check_scaled_run(
    prepared: PreparedRun,
    pg_url: str,
    stages: Sequence[Stage],
    acks: AckLog,
    n8n: FakeN8n,
    *,
    handled_once: bool,
) -> str:
    """What every scaled run must show: the backtest's ledger byte for byte, the DLQ unchanged,
    each symbol's messages handled in publish order by the partitioned stages (each once, with
    ``handled_once``: no death), one AI decision per proposal, one post per notified event.
    Returns a line of figures to print."""
    js, run_id = prepared.js, prepared.run_id
    booked = await distributed_ledger(pg_url, run_id)
    assert [canonical(f) for f in booked] == [canonical(f) for f in prepared.expected], (
        f"booked {brief(booked)}, the backtest {brief(prepared.expected)}"
    )
    assert (await js.stream_info("DLQ")).state.messages == prepared.dlq_before
    repeats = check_order(acks.acks, await watched_subjects(js), stages)
    if handled_once:
        assert not repeats, f"without a death every message is handled once: {repeats}"
    proposals = await check_agent_once(js, pg_url, run_id)
    notified = await check_notified_once(js, pg_url, run_id, n8n)
    return (
        f"{len(booked)} fills, {proposals} AI decisions, {notified} events posted once, "
        f"partitioned messages handled again: {repeats or 'none'}"
    )
