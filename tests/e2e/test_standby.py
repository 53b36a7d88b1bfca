"""Hot standbys of risk and the executor in a lockstep replay, the active ones killed -9 (issue 21).

The seven services run as processes (as in ``test_partitions``); risk and the executor as two
replicas each with ``COINPILOT_STANDBY=true``, each its own member id and metrics port. A third of
the way into the lockstep replay of ``test_outages``' six hours the active risk is killed with
SIGKILL, two thirds in the active executor: each standby takes the lease, resets the durables to
the first unacked message, starts as a restarted process would, and the replay goes on. The
ledger equals the backtest's byte for byte and nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from apps.demo import sample_files, start_service, stop_services, wait_ready
from coinpilot.bus.membership import bucket_name
from coinpilot.candle_files import load_candles
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.runtime import SERVICES
from tests.e2e.test_outages import split_window
from tests.e2e.test_parity import canonical, distributed_ledger
from tests.e2e.test_partitions import start_replica
from tests.support.e2e_run import prepare_run
from tests.support.servers import RedisProcess

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

STANDBYS = ("risk", "executor")
LEASE, BEAT = 6.0, 1.0  # risk's start-up (GARCH import) must fit in a lease on a loaded machine
STANDBY_ENV = {
    "COINPILOT_STANDBY": "true",
    "COINPILOT_PARTITION_LEASE_SECONDS": str(LEASE),
    "COINPILOT_PARTITION_HEARTBEAT_SECONDS": str(BEAT),
}


async def holder(js, stage: str) -> str:  # type: ignore[no-untyped-def]
    kv = await js.key_value(bucket_name(stage))
    return (await kv.get("l.0")).value.decode()


async def test_standbys_of_risk_and_executor_take_over_and_book_the_backtest_ledger(
    nats_url: str, pg_url: str, private_redis: RedisProcess, tmp_path: Path
) -> None:
    warm, replay = split_window(load_candles(sample_files()))
    symbols = sorted({c.symbol for c in replay})
    prepared = await prepare_run("standby", warm, replay, nats_url, pg_url)
    run_id, expected = prepared.run_id, prepared.expected
    nc, js, dlq_before = prepared.nc, prepared.js, prepared.dlq_before
    assert expected, "the window must trade"

    stack = EmbeddedStack(tmp_path, nats_url=nats_url, database_url=pg_url, redis_url=private_redis.url)
    env = {"COINPILOT_SYMBOLS": ",".join(symbols)}
    processes = [
        start_service(name, stack, tmp_path, extra_env=env) for name in SERVICES if name not in STANDBYS
    ]
    processes += [
        start_replica(name, i, stack, tmp_path, env | STANDBY_ENV) for name in STANDBYS for i in range(2)
    ]
    by_name = {p.name: p for p in processes}
    killed: dict[str, float] = {}
    pending: list[asyncio.Task[None]] = []

    async def kill_active(stage: str) -> None:
        owner = await holder(js, stage)
        by_name[owner].proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(by_name[owner].proc.wait)
        killed[owner] = time.monotonic()

    kill_at = {len(replay) // 3: "risk", 2 * len(replay) // 3: "executor"}

    def progress(done: int, total: int) -> None:
        for at, stage in list(kill_at.items()):
            if done >= at:
                del kill_at[at]
                pending.append(asyncio.create_task(kill_active(stage)))

    try:
        await wait_ready(processes)
        for stage in STANDBYS:
            assert await holder(js, stage) in {f"{stage}-0", f"{stage}-1"}
        await replay_candles(
            js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=60, progress=progress
        )
        await asyncio.gather(*pending)
        survivors = {stage: await holder(js, stage) for stage in STANDBYS}
    finally:
        stop_services(processes)

    try:
        assert len(killed) == 2
        for stage, owner in survivors.items():
            assert owner not in killed and owner.startswith(stage)
            log = (tmp_path / "logs" / f"{owner}.log").read_text(errors="replace")
            assert "is now the active one" in log
        booked = await distributed_ledger(pg_url, run_id)
        assert [canonical(f) for f in booked] == [canonical(f) for f in expected]
        assert (await js.stream_info("DLQ")).state.messages == dlq_before
    finally:
        await nc.close()
