"""Strategy -> risk -> (approver) -> executor over real NATS, PostgreSQL and Redis.

Each test drives the pipeline with indicator snapshots (what the indicator service publishes) or
signals, waits until every durable consumer drained, and reads what the streams stored for its
run. Prices: entries close at 1005; with 10,000,000 of paper cash a BULL BUY is 2,000,000.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from sqlalchemy import select

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import Cache, keys
from coinpilot.contracts import (
    AlertType,
    EntrySignal,
    ExitReason,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Regime,
    RejectReason,
    RejectStage,
    RiskAlert,
    Side,
)
from coinpilot.db import DailyRiskState, Database, RiskAudit, StrategyState
from coinpilot.strategy_config import SHIPPED_CONFIG
from tests.integration.risk.harness import Pipeline, open_pipeline
from tests.support.servers import NatsProcess, RedisProcess, wait_for
from tests.unit.strategy.factories import T0, snap

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]
MIN = timedelta(minutes=1)


def buy_snap(symbol: str, minute: int, close: str = "1005"):  # type: ignore[no-untyped-def]
    return snap(symbol=symbol, at=T0 + timedelta(minutes=minute), close=close)


def drop_snap(symbol: str, minute: int, close: str):  # type: ignore[no-untyped-def]
    """A candle whose close is far below entry: a held symbol exits STOP_LOSS."""
    return snap(symbol=symbol, at=T0 + timedelta(minutes=minute), close=close, rsi=30, rsi7=20)


@pytest.fixture
async def pipeline(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> AsyncIterator[Pipeline]:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "risk-it")
    await p.start("strategy", "risk", "ledger")
    yield p
    await p.close()
    await nc.close()


async def test_a_snapshot_becomes_signal_proposal_fill_then_a_stop_loss_exit(
    pipeline: Pipeline, migrated_db: Database, redis_url: str
) -> None:
    await pipeline.step(buy_snap("KRW-BTC", 0))
    (proposal,) = await pipeline.of_type("ORDERS", OrderProposed)
    assert isinstance(proposal, OrderProposed)
    assert proposal.amount == Decimal(2_000_000) and proposal.order_id == "KRW-BTC:2026-03-02T12:00Z:buy"
    (_buy,) = await pipeline.of_type("FILLS", Fill)

    await pipeline.step(drop_snap("KRW-BTC", 1, close="970"))
    (exit_signal,) = await pipeline.of_type("SIGNALS", ExitSignal)
    assert isinstance(exit_signal, ExitSignal) and exit_signal.exit_reason is ExitReason.STOP_LOSS
    approved = [
        m for m in await pipeline.of_type("ORDERS", OrderApproved) if m.approved_by is RejectStage.RISK
    ]  # type: ignore[attr-defined]
    assert [m.side for m in approved] == [Side.SELL]  # type: ignore[attr-defined]
    fills = await pipeline.of_type("FILLS", Fill)
    assert [f.side for f in fills] == [Side.BUY, Side.SELL]  # type: ignore[attr-defined]

    async with migrated_db.session() as s:
        row = (
            await s.execute(select(StrategyState).where(StrategyState.run_id == pipeline.run_id))
        ).scalar_one()
        daily = (
            await s.execute(select(DailyRiskState).where(DailyRiskState.run_id == pipeline.run_id))
        ).scalar_one()
    assert not row.has_position and row.last_candle_at == T0 + MIN
    assert (daily.buy_count, daily.sell_count) == (1, 1) and daily.total_pnl < 0
    cache = Cache(redis_url)
    status = await cache.get_json(keys.bot_status("KRW-BTC", pipeline.run_id))
    assert status["action"] == "SELL" and status["reason"] == "STOP_LOSS"
    assert 0 < await cache.ttl(keys.bot_status("KRW-BTC", pipeline.run_id)) <= 300
    await cache.close()
    assert await pipeline.stored("DLQ") == []


async def test_three_losses_start_a_cooldown_that_rejects_the_next_entry(
    pipeline: Pipeline, migrated_db: Database
) -> None:
    for trip in range(3):
        await pipeline.step(buy_snap("KRW-BTC", 10 * trip))
        await pipeline.step(drop_snap("KRW-BTC", 10 * trip + 1, close="970"))
    (alert,) = await pipeline.of_type("RISK", RiskAlert)
    assert isinstance(alert, RiskAlert) and alert.type is AlertType.COOLDOWN

    await pipeline.step(buy_snap("KRW-BTC", 40))
    rejected = await pipeline.of_type("ORDERS", OrderRejected)
    assert [(r.reason, r.order_id) for r in rejected] == [  # type: ignore[attr-defined]
        (RejectReason.COOLDOWN_ACTIVE, "KRW-BTC:2026-03-02T12:40Z:buy")
    ]
    async with migrated_db.session() as s:
        audits = (
            await s.execute(select(RiskAudit.violation_type).where(RiskAudit.run_id == pipeline.run_id))
        ).scalars()
        assert sorted(audits) == ["COOLDOWN_ACTIVE", "COOLDOWN_STARTED"]

    (fourth,) = [s for s in await pipeline.of_type("SIGNALS", EntrySignal) if s.ts_event == T0 + 40 * MIN]
    await pipeline.publish_copy(fourth)  # decided again: the same rejection, the audit row once
    await pipeline.drain()
    async with migrated_db.session() as s:
        again = (
            await s.execute(select(RiskAudit.violation_type).where(RiskAudit.run_id == pipeline.run_id))
        ).scalars()
        assert sorted(again) == ["COOLDOWN_ACTIVE", "COOLDOWN_STARTED"]

    await pipeline.step(buy_snap("KRW-BTC", 41))  # the rejection freed the strategy: it signals again
    assert len({m.ts_event for m in await pipeline.of_type("SIGNALS", EntrySignal)}) == 5


@pytest.fixture
def halting_config(tmp_path: Path) -> Path:
    """The shipped YAML with a 1 % daily loss limit and no cooldown in reach."""
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    raw["risk_management"]["max_daily_loss"] = 0.01
    raw["risk_management"]["cooldown_after_consecutive_losses"] = 9
    path = tmp_path / "strategy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_a_daily_loss_halt_blocks_entries_but_lets_exits_through(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database, halting_config: Path
) -> None:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "halt-it", halting_config)
    await p.start("strategy", "risk", "ledger")
    try:
        await p.step(buy_snap("KRW-BTC", 0), buy_snap("KRW-ETH", 0))
        assert len(await p.of_type("FILLS", Fill)) == 2
        await p.step(drop_snap("KRW-BTC", 1, close="900"))  # about -10 % of 2,000,000: over 100,000
        await p.step(buy_snap("KRW-XRP", 2))
        await p.step(buy_snap("KRW-XRP", 3))
        rejected = await p.of_type("ORDERS", OrderRejected)
        assert [r.reason for r in rejected] == [RejectReason.MAX_DAILY_LOSS, RejectReason.TRADING_HALTED]  # type: ignore[attr-defined]
        (alert,) = await p.of_type("RISK", RiskAlert)
        assert alert.type is AlertType.DAILY_LOSS_HALT  # type: ignore[attr-defined]

        await p.step(drop_snap("KRW-ETH", 4, close="950"))
        sells = [f for f in await p.of_type("FILLS", Fill) if f.side is Side.SELL]  # type: ignore[attr-defined]
        assert [f.symbol for f in sells] == ["KRW-BTC", "KRW-ETH"]  # type: ignore[attr-defined]
        async with migrated_db.session() as s:
            daily = (
                await s.execute(select(DailyRiskState).where(DailyRiskState.run_id == p.run_id))
            ).scalar_one()
        assert daily.is_trading_halted and daily.sell_count == 2
    finally:
        await p.close()
        await nc.close()


def entry_signal(symbol: str, minute: int, price: str = "1005") -> EntrySignal:
    s = buy_snap(symbol, minute, close=price)
    return EntrySignal(
        ts_event=s.ts_event, symbol=symbol, price=Decimal(price), regime=Regime.BULL, snapshot=s
    )


async def test_two_entry_signals_before_the_fill_make_one_order(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> None:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "race-it")
    await p.start("risk")
    try:
        first, second = entry_signal("KRW-SOL", 0), entry_signal("KRW-SOL", 1)
        await p.step(first, second)
        await p.publish_copy(first)  # the first signal again, as a late producer retry would send it
        await p.drain()
        proposals = await p.of_type("ORDERS", OrderProposed)
        rejected = await p.of_type("ORDERS", OrderRejected)
        assert [m.order_id for m in proposals] == ["KRW-SOL:2026-03-02T12:00Z:buy"]  # type: ignore[attr-defined]
        assert [(m.reason, m.order_id) for m in rejected] == [  # type: ignore[attr-defined]
            (RejectReason.ORDER_PENDING, "KRW-SOL:2026-03-02T12:01Z:buy")
        ]
        await p.start("ledger")
        await p.drain()
        assert [f.order_id for f in await p.of_type("FILLS", Fill)] == ["KRW-SOL:2026-03-02T12:00Z:buy"]  # type: ignore[attr-defined]
        await p.step(entry_signal("KRW-SOL", 2))  # filled now: a held symbol is a duplicate
        last = (await p.of_type("ORDERS", OrderRejected))[-1]
        assert last.reason is RejectReason.DUPLICATE_POSITION  # type: ignore[attr-defined]
    finally:
        await p.close()
        await nc.close()


def transient_retries(subject: str) -> float:
    """In-place retries of transient failures of consumers on ``subject`` (a filter pattern)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "coinpilot_transient_retries"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("subject") == subject
    )


async def test_with_redis_stopped_exits_continue_and_sizing_never_falls_back_to_a_default(
    pipeline_nats: NatsProcess, pg_url: str, migrated_db: Database, private_redis: RedisProcess
) -> None:
    p, nc = await open_pipeline(pipeline_nats, pg_url, private_redis.url, "redis-down-it")
    cache = Cache(private_redis.url)
    high = VolatilityState("KRW-ETH", 2.5, True, T0 - timedelta(hours=1), 2160, 1.5)
    await cache.set(keys.volatility_state("KRW-ETH", p.run_id), high.to_json())
    await cache.close()
    await p.start("strategy", "risk", "ledger")
    try:
        await p.step(buy_snap("KRW-BTC", 0))
        await p.step(entry_signal("KRW-ETH", 1))
        volatile = [m for m in await p.of_type("ORDERS", OrderProposed) if m.symbol == "KRW-ETH"]  # type: ignore[attr-defined]
        assert [(m.vol_multiplier, m.amount) for m in volatile] == [(Decimal("0.5"), Decimal(1_000_000))]  # type: ignore[attr-defined]

        private_redis.stop()
        await p.step(drop_snap("KRW-BTC", 2, close="970"))
        exits = await p.of_type("SIGNALS", ExitSignal)
        assert [m.exit_reason for m in exits] == [ExitReason.STOP_LOSS]  # type: ignore[attr-defined]
        sells = [f for f in await p.of_type("FILLS", Fill) if f.side is Side.SELL]  # type: ignore[attr-defined]
        assert [f.symbol for f in sells] == ["KRW-BTC"]  # type: ignore[attr-defined]

        await p.step(entry_signal("KRW-ETH", 3))  # ETH is held: rejected (sized from the mirror)
        # XRP's state was never read by this process: 1.0 in its place could change the size, so
        # the signal waits in place for Redis (issue 19), neither decided nor dead-lettered.
        before = transient_retries("signals.*.*")
        await p.publish(entry_signal("KRW-XRP", 4))
        await wait_for(lambda: transient_retries("signals.*.*") > before, timeout=30)
        assert [m for m in await p.of_type("ORDERS", OrderProposed) if m.symbol == "KRW-XRP"] == []  # type: ignore[attr-defined]
        private_redis.start()  # empty: XRP has no state, so the missing-state rule (1.0) applies
        await p.drain()
        xrp = [m for m in await p.of_type("ORDERS", OrderProposed) if m.symbol == "KRW-XRP"]  # type: ignore[attr-defined]
        assert [m.vol_multiplier for m in xrp] == [Decimal(1)]  # type: ignore[attr-defined]
        assert await p.stored("DLQ") == []
    finally:
        await p.close()
        await nc.close()
