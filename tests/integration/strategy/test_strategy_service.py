"""The strategy as a service over real NATS, PostgreSQL and Redis: state, warm restart, real candles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from coinpilot.cache import Cache, keys
from coinpilot.candle_files import load_candles
from coinpilot.contracts import EntrySignal, ExitReason, ExitSignal, IndicatorSnapshot, OrderProposed, Side
from coinpilot.db import Database, StrategyState
from coinpilot.strategy_config import load_strategy_config
from services.indicator.core import history_messages
from services.indicator.settings import config_from_strategy
from services.strategy.core import SymbolState, on_fill, on_snapshot
from services.strategy.params import StrategyParams
from tests.integration.risk.harness import Pipeline, open_pipeline
from tests.support.servers import NatsProcess
from tests.unit.strategy.factories import T0, fill, snap

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def pipeline(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> AsyncIterator[Pipeline]:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "strategy-it")
    await p.start("strategy", "risk", "ledger")
    yield p
    await p.close()
    await nc.close()


async def test_the_high_water_mark_is_persisted_cached_and_survives_a_restart(
    pipeline: Pipeline, migrated_db: Database, redis_url: str
) -> None:
    minute = timedelta(minutes=1)
    await pipeline.step(snap(at=T0, close="1005"))
    for k, close in enumerate(("1020", "1030"), start=1):
        await pipeline.step(snap(at=T0 + k * minute, close=close, rsi=55))
    async with migrated_db.session() as s:
        row = (
            await s.execute(select(StrategyState).where(StrategyState.run_id == pipeline.run_id))
        ).scalar_one()
    assert (row.has_position, row.high_water_mark, row.last_reason) == (True, Decimal(1030), "HOLDING")
    cache = Cache(redis_url)
    assert await cache.get(keys.position_hwm("KRW-BTC", pipeline.run_id)) == "1030"
    status = await cache.get_json(keys.bot_status("KRW-BTC", pipeline.run_id))
    assert (status["action"], status["reason"], status["indicators"]["hwm"]) == (
        "HOLD (POS)",
        "HOLDING",
        1030.0,
    )

    await pipeline.restart("strategy")
    await cache.delete(keys.position_hwm("KRW-BTC", pipeline.run_id))  # the cache is not the truth
    await pipeline.step(snap(at=T0 + 3 * minute, close="999", rsi=45))  # 1030 x 0.97 = 999.1
    (exit_signal,) = await pipeline.of_type("SIGNALS", ExitSignal)
    assert isinstance(exit_signal, ExitSignal)
    assert (exit_signal.exit_reason, exit_signal.high_water_mark) == (ExitReason.TRAILING_STOP, Decimal(1030))
    assert await cache.get(keys.position_hwm("KRW-BTC", pipeline.run_id)) is None  # position closed
    await cache.close()


def real_snapshots(shared_data: Path) -> list[IndicatorSnapshot]:
    """ETH/USDT 2023-03-16 .. 03-26 15:00 through the indicator maths; the last six hours kept.

    Ten days give the 200 closed hours a regime needs; the kept window holds two entries and an
    RSI-overbought exit (see tests/fixtures/decisions/ for the multi-day golden run).
    """
    candles = load_candles(
        [shared_data / "ETH_USDT-1m-20230316-20230501.csv.gz"], end=datetime(2023, 3, 26, 15, 0, tzinfo=UTC)
    )
    config = config_from_strategy(load_strategy_config())
    snapshots = [m for m in history_messages(candles, config) if isinstance(m, IndicatorSnapshot)]
    return [s for s in snapshots if s.ts_event > datetime(2023, 3, 26, 9, 0, tzinfo=UTC)]


def expected_signals(snapshots: list[IndicatorSnapshot]) -> list[tuple[str, datetime, str]]:
    """The pure core with every order filled at once at the signal price: no process, no restart."""
    params = StrategyParams.from_config(load_strategy_config())
    state = SymbolState(snapshots[0].symbol)
    out: list[tuple[str, datetime, str]] = []
    for s in snapshots:
        step = on_snapshot(state, s, params)
        state = step.state
        for signal in step.out:
            order_id = state.pending_order_id or ""
            if isinstance(signal, EntrySignal):
                out.append(("entry", signal.ts_event, signal.reason.value))
                state = on_fill(
                    state,
                    fill(
                        Side.BUY,
                        order_id=order_id,
                        price=str(signal.price),
                        at=s.ts_event,
                        symbol=s.symbol,
                        regime=s.regime,
                    ),
                )
            else:
                out.append(("exit", signal.ts_event, signal.exit_reason.value))
                state = on_fill(state, fill(Side.SELL, order_id=order_id, at=s.ts_event, symbol=s.symbol))
    return out


def signal_key(m: object) -> tuple[str, datetime, str]:
    if isinstance(m, EntrySignal):
        return ("entry", m.ts_event, m.reason.value)
    assert isinstance(m, ExitSignal)
    return ("exit", m.ts_event, m.exit_reason.value)


async def test_restarting_strategy_and_risk_mid_stream_changes_no_decision(
    pipeline: Pipeline, shared_data: Path
) -> None:
    snapshots = real_snapshots(shared_data)
    expected = expected_signals(snapshots)
    assert [k for k, _, _ in expected] == ["entry", "exit", "entry"]
    restarts = {
        len(snapshots) // 4: "strategy",  # before the first entry
        (len(snapshots) * 3) // 8: "risk",
        len(snapshots) // 2: "strategy",  # while the position is open: HWM and position from the DB
        (len(snapshots) * 3) // 4: "risk",
    }
    fired_at = {t for _, t, _ in expected}
    for k, snapshot in enumerate(snapshots):
        await pipeline.publish(snapshot)
        if k in restarts:
            await pipeline.restart(restarts[k])  # no drain first: candles may be in flight
        if snapshot.ts_event in fired_at:
            await pipeline.drain()  # lockstep where it matters: the fill lands before the next candle
    await pipeline.drain()
    signals = [signal_key(m) for m in await pipeline.stored("SIGNALS")]
    assert signals == expected
    proposals = await pipeline.of_type("ORDERS", OrderProposed)
    assert [p.ts_event for p in proposals] == [t for kind, t, _ in expected if kind == "entry"]  # type: ignore[attr-defined]
    assert await pipeline.stored("DLQ") == []
