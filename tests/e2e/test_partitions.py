"""The scaled deployment books the backtest's ledger, in order, through deaths and a join (issue 21).

The seven services run as processes in the one topology of ``tests/support/scaled.py``: indicator
and strategy three partitioned replicas each (8 partitions), the collector ``COLLECTORS`` (2,
partitioned), risk and the executor an active and a hot standby each, agent and notifier two
replicas on their shared durables; the notifier posts every event of the run to a local n8n. A
lockstep replay of fourteen hours over two trading days (``scaled_window``) books the backtest's
ledger byte for byte and nothing is dead-lettered. Each symbol's messages are handled in publish
order by the partitioned stages: the test listens to every ack they send
(``$JS.ACK.<stream>.<durable>...<stream seq>...``) and checks that, per symbol and consumer, the
first ack of each message comes in stream order and every message is acked. Nothing lost or
duplicated downstream: one ``agent_decisions`` row and one ``ai.decisions`` message per proposed
order, one n8n post per notified event.

``kill-9``: at spread points of the replay, SIGKILL (none restarted) of the owner of the busiest
partition of the collector, the indicator and the strategy, of one agent and one notifier replica, and of the
active risk and the active executor. The partitions move (their leases expire, the new owner
resets the durables to the ack floor), the standbys become active, the shared durables redeliver
what the dead had in hand: same ledger, same order, same checks. The takeover times (kill to the
new owner's first ack, or to its ``/readyz`` saying ``active``) are printed, not asserted.

``join``: two indicator and strategy replicas at first, a third of each started a third of the way
in: the partitions rebalance (the old owners hand over, nothing handled twice), same checks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from coinpilot.bus.partitions import partition_of
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from tests.support.e2e_run import prepare_run
from tests.support.fake_webhooks import FakeN8n, running
from tests.support.scaled import (
    PARTITIONS,
    SCALED,
    WATCHED,
    AckLog,
    Deployment,
    Stage,
    check_scaled_run,
    lease_holder,
    notifier_env,
    scaled,
    scaled_window,
    spread,
    stage_of,
)
from tests.support.servers import RedisProcess

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(420),
]

PARTITIONED = ("indicator", "strategy")
KILLS = ("risk", "indicator", "agent", "collector", "strategy", "notifier", "executor")
"""The stage of each kill -9, in replay order (at 1/8, 2/8, ... of the candles)."""


class Killer:
    """Kills one replica of a stage as the mode asks and notes what the takeover took."""

    def __init__(self, deployment: Deployment, js: JetStreamContext, acks: AckLog, busiest: int) -> None:
        self.deployment, self.js, self.acks, self.busiest = deployment, js, acks, busiest
        self.killed: dict[str, str] = {}  # stage -> member
        self.at: dict[str, float] = {}  # stage -> when it died
        self.active: dict[str, tuple[str, float]] = {}  # standby stage -> (new active, when)

    async def kill(self, stage: Stage) -> None:
        if stage.kind == "partitioned":
            member = await lease_holder(self.js, stage.name, self.busiest)
        elif stage.kind == "standby":
            member = await lease_holder(self.js, stage.name)
        else:
            member = f"{stage.name}-0"
        self.killed[stage.name] = member
        self.at[stage.name] = await self.deployment.kill(member)
        if stage.kind == "standby":
            self.active[stage.name] = await self.deployment.active_after(stage)

    def takeovers(self) -> dict[str, float | None]:
        """Seconds from each kill to the new owner's first ack of the busiest partition
        (partitioned stages) or to the standby's ``/readyz`` saying ``active``."""
        out: dict[str, float | None] = {}
        for stage, at in self.at.items():
            if stage in self.active:
                out[stage] = self.active[stage][1] - at
            elif stage in WATCHED:
                first = self.acks.first_after(f"{WATCHED[stage][1]}-p{self.busiest}", at)
                out[stage] = None if first is None else first - at
        return out


@pytest.mark.parametrize("mode", ["steady", "kill-9", "join"])
async def test_the_scaled_deployment_books_the_backtest_ledger_in_order(
    nats_url: str, pg_url: str, private_redis: RedisProcess, tmp_path: Path, mode: str
) -> None:
    """A Redis of its own: the ledger's Redis state (risk's closes, the HWMs) starts empty."""
    kill, join = mode == "kill-9", mode == "join"
    stages = scaled(indicator=2, strategy=2) if join else SCALED
    warm, replay = scaled_window()
    symbols = sorted({c.symbol for c in replay})
    prepared = await prepare_run("partitions", warm, replay, nats_url, pg_url)
    run_id, nc, js = prepared.run_id, prepared.nc, prepared.js
    assert prepared.expected, "the window must trade"

    async with running(FakeN8n()) as n8n:
        stack = EmbeddedStack(tmp_path, nats_url=nats_url, database_url=pg_url, redis_url=private_redis.url)
        deployment = Deployment(
            stack, tmp_path, {"COINPILOT_SYMBOLS": ",".join(symbols)}, {"notifier": notifier_env(n8n)}
        )
        deployment.start(stages)
        acks = AckLog()
        ack_sub = await nc.subscribe("$JS.ACK.>", cb=acks.on_ack)
        killer = Killer(deployment, js, acks, partition_of(symbols[0], PARTITIONS))
        pending: list[asyncio.Task[None]] = []
        kill_at = {(i + 1) * len(replay) // (len(KILLS) + 1): s for i, s in enumerate(KILLS)} if kill else {}
        join_at = len(replay) // 3 if join else None

        def progress(done: int, total: int) -> None:
            nonlocal join_at
            for at, stage in list(kill_at.items()):
                if done >= at:
                    del kill_at[at]
                    pending.append(asyncio.create_task(killer.kill(stage_of(stages, stage))))
            if join_at is not None and done >= join_at:
                join_at = None
                for name in PARTITIONED:
                    deployment.add(stage_of(SCALED, name), stage_of(stages, name).replicas)

        try:
            await deployment.ready(js, stages)
            await replay_candles(
                js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=60, progress=progress
            )
            await asyncio.gather(*pending)
            holders = {stage: await lease_holder(js, stage) for stage in killer.active}  # before the stop
            if join:
                for name in PARTITIONED:
                    assert set(await spread(js, name, 3)) == set(stage_of(SCALED, name).members())
            await nc.flush()
        finally:
            await ack_sub.unsubscribe()
            deployment.stop()

        try:
            assert len(killer.killed) == (len(KILLS) if kill else 0)
            for stage, (member, _) in killer.active.items():
                assert member != killer.killed[stage] and holders[stage] == member
                assert "is now the active one" in deployment.log_of(member)
            print(
                f"{mode}: "
                + await check_scaled_run(prepared, pg_url, stages, acks, n8n, handled_once=not kill)
            )
            for stage, seconds in killer.takeovers().items():  # for the note, not asserted (a loaded machine)
                shown = "no ack after it" if seconds is None else f"{seconds:.1f} s"
                print(f"takeover of {stage} ({killer.killed[stage]} killed -9): {shown}")
        finally:
            await nc.close()
