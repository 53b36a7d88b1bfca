"""The strategy takes a backlog in runs (one transaction each, two symbols interleaved) and decides
exactly what the pure core decides one snapshot at a time: same signals, same stored state, same
dashboard keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from coinpilot.cache import Cache, keys
from coinpilot.contracts import EntrySignal, ExitSignal, IndicatorSnapshot
from coinpilot.db import Database
from coinpilot.strategy_config import load_strategy_config
from services.strategy import state
from services.strategy.core import SymbolState, on_snapshot, status_payload
from services.strategy.params import StrategyParams
from tests.integration.risk.harness import Pipeline, open_pipeline
from tests.integration.strategy.test_strategy_service import real_snapshots
from tests.support.servers import NatsProcess

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]

TWIN = "USDT-TWIN"


@pytest.fixture
async def pipeline(
    pipeline_nats: NatsProcess, pg_url: str, redis_url: str, migrated_db: Database
) -> AsyncIterator[Pipeline]:
    p, nc = await open_pipeline(pipeline_nats, pg_url, redis_url, "strategy-batches")
    yield p
    await p.close()
    await nc.close()


def twin(s: IndicatorSnapshot) -> IndicatorSnapshot:
    """The same snapshot for another symbol, with the close nudged so the two symbols differ."""
    close = s.candle.close * Decimal("1.001")
    candle = s.candle.model_copy(update={"symbol": TWIN, "close": close, "high": max(s.candle.high, close)})
    return s.model_copy(update={"symbol": TWIN, "candle": candle})


def fold(snapshots: list[IndicatorSnapshot], params: StrategyParams):
    """The pure core one snapshot at a time, per symbol: signals, final states, last status."""
    states: dict[str, SymbolState] = {}
    signals: list[tuple[str, str]] = []
    statuses: dict[str, dict[str, object]] = {}
    for s in snapshots:
        step = on_snapshot(states.get(s.symbol, SymbolState(s.symbol)), s, params)
        states[s.symbol] = step.state
        signals.extend((m.symbol, m.msg_id()) for m in step.out)
        if step.evaluation is not None:
            statuses[s.symbol] = status_payload(step.state, s, step.evaluation)
    return signals, states, statuses


async def test_a_backlog_in_runs_decides_what_one_at_a_time_decides(
    pipeline: Pipeline, shared_data: Path, migrated_db: Database, redis_url: str
) -> None:
    eth = real_snapshots(shared_data)
    snapshots = [m for s in eth for m in (s, twin(s))]  # interleaved: every run holds both symbols
    expected_signals, expected_states, expected_statuses = fold(
        snapshots, StrategyParams.from_config(load_strategy_config())
    )
    assert any(kind == "USDT-ETH" for kind, _ in expected_signals)
    assert any(kind == TWIN for kind, _ in expected_signals)

    await pipeline.publish(*snapshots)  # the whole backlog before the service starts
    await pipeline.start("strategy")
    await pipeline.drain()

    stored = [m for m in await pipeline.stored("SIGNALS") if isinstance(m, EntrySignal | ExitSignal)]
    assert [(m.symbol, m.msg_id()) for m in stored] == expected_signals
    async with migrated_db.transaction() as conn:
        stored_states = {s.symbol: s for s in await state.load_all(conn, pipeline.run_id)}
    assert stored_states == expected_states
    cache = Cache(redis_url)
    for symbol, payload in expected_statuses.items():
        assert await cache.get_json(keys.bot_status(symbol, pipeline.run_id)) == payload
    await cache.close()
    assert await pipeline.stored("DLQ") == []
