"""The kill switch through the risk service over real NATS, PostgreSQL and Redis: a ``HaltCommand`` on
``control.halt`` halts entries (CRITICAL alert), exits still pass, and only clearing it lets
entries through again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from coinpilot.clock import wall_clock_now
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    HaltCommand,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectReason,
    RiskAlert,
)
from coinpilot.db import Database
from coinpilot.db.halts import active_halt, clear_halt
from tests.integration.risk.harness import Pipeline, open_pipeline
from tests.support.servers import NatsProcess
from tests.unit.risk.factories import T0, entry, exit_signal

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]
MIN = timedelta(minutes=1)


@pytest.fixture
async def pipeline(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> AsyncIterator[Pipeline]:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "halt-it")
    await p.start("risk")
    yield p
    await p.close()
    await nc.close()


async def test_a_halt_on_the_subject_stops_entries_until_cleared_and_exits_pass(
    pipeline: Pipeline, migrated_db: Database
) -> None:
    p = pipeline
    await p.step(HaltCommand(ts_event=T0 - MIN, reason="exchange maintenance", requested_by="ops"))
    halt = await active_halt(migrated_db, p.run_id)
    assert halt is not None and halt.source == "subject"
    (alert,) = await p.of_type("RISK", RiskAlert)
    assert (alert.type, alert.level) == (AlertType.TRADING_HALT, AlertLevel.CRITICAL)  # type: ignore[attr-defined]

    await p.step(entry(at=T0), exit_signal(at=T0 + MIN))
    (rejected,) = await p.of_type("ORDERS", OrderRejected)
    assert rejected.reason is RejectReason.TRADING_HALTED  # type: ignore[attr-defined]
    assert rejected.message == (  # type: ignore[attr-defined]
        f"entries halted by subject since {(T0 - MIN).isoformat()}: exchange maintenance (requested by ops)"
    )
    assert [m.side for m in await p.of_type("ORDERS", OrderApproved)] == ["SELL"]  # type: ignore[attr-defined]
    assert await p.of_type("ORDERS", OrderProposed) == []

    await clear_halt(migrated_db, p.run_id, "operator:test", wall_clock_now())
    await p.step(entry(at=T0 + 2 * MIN))
    assert [m.order_id for m in await p.of_type("ORDERS", OrderProposed)] == [  # type: ignore[attr-defined]
        "KRW-BTC:2026-03-02T12:02Z:buy"
    ]
