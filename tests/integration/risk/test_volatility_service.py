"""Risk's GARCH over NATS: real hourly candles in, a fit in Redis on event time, sizes that follow it.

600 hourly candles resampled from the real 2023 BTC/USDT file are published on ``candles.1h``.
Risk keeps them as its window (Redis), fits once 500 returns exist, then refits on the first
hourly candle at/after 00:05 UTC of each day. An entry signal an hour later is sized with the fit.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import Cache, keys
from coinpilot.candle_files import load_candles
from coinpilot.contracts import AlertType, EntrySignal, HourlyCandle, OrderProposed, Regime, RiskAlert
from coinpilot.db import Database
from coinpilot.strategy_config import SHIPPED_CONFIG
from services.indicator.core import hourly_buckets
from tests.integration.risk.harness import open_pipeline
from tests.support.servers import NatsProcess
from tests.unit.strategy.factories import snap

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]
HOURS = 600


@pytest.fixture(scope="module")
def hourly(shared_data: Path) -> list[HourlyCandle]:
    candles = load_candles([shared_data / "BTC_USDT-1m-20230316-20230501.csv.gz"])
    return hourly_buckets(candles[: (HOURS + 2) * 60])[1 : HOURS + 1]  # whole hours only


def config_with_threshold(tmp_path: Path, threshold: float) -> Path:
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    raw["risk_management"]["volatility"]["vol_threshold_hourly_pct"] = threshold
    path = tmp_path / f"strategy-{threshold}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("threshold", "high", "multiplier", "amount"),
    [
        pytest.param(1.5, False, Decimal(1), Decimal(2_000_000), id="calm-hours-full-size"),
        pytest.param(
            0.05, True, Decimal("0.5"), Decimal(1_000_000), id="above-threshold-half-size-and-alert"
        ),
    ],
)
async def test_hourly_candles_fit_garch_and_the_fit_sizes_the_next_buy(
    pipeline_nats: NatsProcess,
    pg_url: str,
    redis_url: str,
    migrated_db: Database,
    hourly: list[HourlyCandle],
    tmp_path: Path,
    threshold: float,
    high: bool,
    multiplier: Decimal,
    amount: Decimal,
) -> None:
    p, nc = await open_pipeline(
        pipeline_nats, pg_url, redis_url, "garch-it", config_with_threshold(tmp_path, threshold)
    )
    await p.start("risk")
    try:
        await p.publish(*hourly)
        await p.drain(timeout=60)
        cache = Cache(redis_url)
        raw = await cache.get(keys.volatility_state("USDT-BTC", p.run_id))
        await cache.close()
        assert raw is not None
        state = VolatilityState.from_json(raw)
        last_close = hourly[-1].ts_event
        assert state.is_high_volatility is high and state.returns_used >= 500
        assert state.as_of.hour == 1 and timedelta(0) <= last_close - state.as_of < timedelta(days=1)

        at = last_close + timedelta(minutes=1)
        s = snap(symbol="USDT-BTC", at=at, close="28000", ma=28000)
        await p.step(
            EntrySignal(ts_event=at, symbol="USDT-BTC", price=Decimal(28000), regime=Regime.BULL, snapshot=s)
        )
        (proposal,) = await p.of_type("ORDERS", OrderProposed)
        assert (proposal.vol_multiplier, proposal.amount) == (multiplier, amount)  # type: ignore[attr-defined]
        alerts = [a.type for a in await p.of_type("RISK", RiskAlert)]  # type: ignore[attr-defined]
        assert alerts == ([AlertType.VOLATILITY_HIGH] if high else [])
    finally:
        await p.close()
        await nc.close()
