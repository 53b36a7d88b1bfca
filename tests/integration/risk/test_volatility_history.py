"""Risk's GARCH warms from recorded history: ``market_data`` in, a fit at start-up, not weeks later.

620 hours of the real 2023 BTC/USDT candles, moved in time to end at the current hour, are
recorded in ``market_data`` under a symbol of this test only (as the collector's backfill leaves
them). The risk service starts: before any hourly candle reaches it, its start-up refit seeds the
symbol's window from those hours and fits, and the next entry signal is sized with that fit. A
run risk has not seen before (a replay) seeds its own window at its first hourly candle.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import Cache, keys
from coinpilot.candle_files import load_candles
from coinpilot.clock import floor_hour, wall_clock_now
from coinpilot.contracts import (
    AlertType,
    EntrySignal,
    HourlyCandle,
    MinuteCandle,
    OrderProposed,
    Regime,
    RiskAlert,
)
from coinpilot.db import Database
from coinpilot.db.market import copy_candles
from tests.integration.risk.harness import Pipeline, new_run_id, open_pipeline
from tests.integration.risk.test_volatility_service import config_with_threshold
from tests.support.servers import NatsProcess
from tests.unit.strategy.factories import snap

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]
HOURS = 620


@pytest.fixture
async def recorded(shared_data: Path, migrated_db: Database) -> tuple[str, list[MinuteCandle]]:
    """The candles recorded under a fresh symbol, the last one in the hour before the current one."""
    symbol = f"KRW-G{uuid.uuid4().hex[:8].upper()}"
    real = load_candles([shared_data / "BTC_USDT-1m-20230316-20230501.csv.gz"])
    first = floor_hour(real[0].ts_open) + timedelta(hours=1)
    real = [c for c in real if first <= c.ts_open < first + timedelta(hours=HOURS)]
    shift = floor_hour(wall_clock_now()) - (first + timedelta(hours=HOURS))
    candles = [
        c.model_copy(update={"symbol": symbol, "ts_open": c.ts_open + shift, "ts_event": c.ts_event + shift})
        for c in real
    ]
    await copy_candles(migrated_db, candles)
    yield symbol, candles
    async with migrated_db.transaction() as conn:
        await conn.execute("DELETE FROM market_data WHERE symbol = $1", symbol)


async def fitted_state(redis_url: str, symbol: str, run_id: str, timeout: float = 60) -> VolatilityState:
    cache = Cache(redis_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while (raw := await cache.get(keys.volatility_state(symbol, run_id))) is None:
            assert asyncio.get_running_loop().time() < deadline, f"no fit of {symbol} for {run_id}"
            await asyncio.sleep(0.1)
    finally:
        await cache.close()
    return VolatilityState.from_json(raw)


async def test_risk_fits_at_start_up_from_market_data_and_sizes_the_first_buy_with_it(
    pipeline_nats: NatsProcess,
    pg_url: str,
    redis_url: str,
    recorded: tuple[str, list[MinuteCandle]],
    tmp_path: Path,
) -> None:
    symbol, candles = recorded
    hours = len({floor_hour(c.ts_open) for c in candles})
    p, nc = await open_pipeline(
        pipeline_nats, pg_url, redis_url, "garch-history", config_with_threshold(tmp_path, 0.05)
    )
    p.settings = p.settings.model_copy(update={"run_id": p.run_id, "symbols": (symbol,)})
    replay = Pipeline(p.nats_url, p.settings, p.js, new_run_id("garch-history-replay"))
    await p.start("risk")
    try:
        state = await fitted_state(redis_url, symbol, p.run_id)
        last_hour_end = floor_hour(wall_clock_now())
        assert state.as_of == candles[-1].ts_open.replace(minute=0) + timedelta(hours=1) <= last_hour_end
        assert state.returns_used == hours - 1 >= 500  # every recorded hour, none from the bus
        assert state.is_high_volatility

        at = state.as_of + timedelta(minutes=1)
        s = snap(symbol=symbol, at=at, close="28000", ma=28000)
        await p.step(
            EntrySignal(ts_event=at, symbol=symbol, price=Decimal(28000), regime=Regime.BULL, snapshot=s)
        )
        (proposal,) = await p.of_type("ORDERS", OrderProposed)
        assert proposal.vol_multiplier == Decimal("0.5")  # type: ignore[attr-defined]
        alerts = [a.type for a in await p.of_type("RISK", RiskAlert)]  # type: ignore[attr-defined]
        assert alerts == [AlertType.VOLATILITY_HIGH]

        # a run risk has not seen: its first hourly candle comes after the same recorded hours
        hour = state.as_of
        last = candles[-1]
        await replay.step(
            HourlyCandle(
                symbol=symbol,
                ts_open=hour,
                ts_event=hour + timedelta(hours=1),
                open=last.close,
                high=last.close,
                low=last.close,
                close=last.close,
                volume=Decimal(1),
                minute_count=1,
            )
        )
        replayed = await fitted_state(redis_url, symbol, replay.run_id)
        assert replayed.as_of == hour + timedelta(hours=1)
        assert replayed.returns_used == hours  # the recorded hours and this one
    finally:
        await p.close()
        await replay.close()
        await nc.close()
