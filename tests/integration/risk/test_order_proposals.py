"""Risk records every order it approves (``order_proposals``), the executor's provenance record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from coinpilot.contracts import Fill, OrderApproved, OrderProposed, RejectStage, Side
from coinpilot.db import Database, OrderProposal
from tests.integration.risk.harness import Pipeline, open_pipeline
from tests.support.servers import NatsProcess
from tests.unit.strategy.factories import T0, snap

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def pipeline(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> AsyncIterator[Pipeline]:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "risk-record")
    await p.start("strategy", "risk", "ledger")
    yield p
    await p.close()
    await nc.close()


async def test_the_buy_risk_proposes_and_the_exit_it_approves_are_recorded_as_published(
    pipeline: Pipeline, migrated_db: Database
) -> None:
    await pipeline.step(snap(symbol="KRW-BTC", at=T0, close="1005"))
    (proposal,) = await pipeline.of_type("ORDERS", OrderProposed)
    await pipeline.step(snap(symbol="KRW-BTC", at=T0 + timedelta(minutes=1), close="970", rsi=30, rsi7=20))
    (exit_order,) = [
        m
        for m in await pipeline.of_type("ORDERS", OrderApproved)
        if isinstance(m, OrderApproved) and m.approved_by is RejectStage.RISK
    ]
    assert [f.side for f in await pipeline.of_type("FILLS", Fill)] == [Side.BUY, Side.SELL]  # type: ignore[attr-defined]

    async with migrated_db.session() as s:
        rows = (
            (
                await s.execute(
                    select(OrderProposal)
                    .where(OrderProposal.run_id == pipeline.run_id)
                    .order_by(OrderProposal.ts_event)
                )
            )
            .scalars()
            .all()
        )
    assert isinstance(proposal, OrderProposed) and isinstance(exit_order, OrderApproved)
    assert [
        (r.order_id, r.symbol, r.side, r.amount, r.reference_price, r.needs_confirmation, r.ts_event)
        for r in rows
    ] == [
        (proposal.order_id, "KRW-BTC", "BUY", Decimal(2_000_000), Decimal(1005), True, proposal.ts_event),
        (exit_order.order_id, "KRW-BTC", "SELL", None, Decimal(970), False, exit_order.ts_event),
    ]
