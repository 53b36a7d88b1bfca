"""The candle handler's edges on real PostgreSQL and Redis: redelivery, idempotent rows, Redis down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from coinpilot.cache import Cache, keys
from coinpilot.candle_files import load_candles
from coinpilot.contracts import IndicatorSnapshot, MinuteCandle, Regime, RegimeUpdate
from coinpilot.db import Database, RegimeHistory, upgrade
from services.indicator import state
from services.indicator.core import DEFAULT_CONFIG
from services.indicator.handlers import CandleHandler
from services.indicator.state import MarketDataStore
from tests.support.servers import RedisProcess, create_database, drop_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
async def db() -> AsyncIterator[Database]:
    name, url = await create_database("cp_indicator_handler")
    await upgrade(url)
    database = Database(url)
    yield database
    await database.dispose()
    await drop_database(name)


@pytest.fixture(scope="module")
def hour(shared_data: Path) -> list[MinuteCandle]:
    """01:00 to 02:05 of the first full hours of the March 2023 ETH file (an hour closes at 01:59)."""
    candles = load_candles([shared_data / "ETH_USDT-1m-20230316-20230501.csv.gz"])[:400]
    start = next(i for i, c in enumerate(candles) if c.ts_open.minute == 0)
    return candles[start : start + 66]


def handler(db: Database, cache: Cache | None) -> CandleHandler:
    return CandleHandler(
        MarketDataStore(db, cache),
        DEFAULT_CONFIG,
        regime_ttl_seconds=7200,
        keep_outputs=30,
        log=logging.getLogger("test"),
    )


async def regime_rows(db: Database, run_id: str) -> int:
    async with db.session() as session:
        statement = select(func.count()).select_from(RegimeHistory).where(RegimeHistory.run_id == run_id)
        return (await session.execute(statement)).scalar_one()


async def test_a_redelivered_candle_gets_its_outputs_again_and_writes_nothing_twice(
    db: Database, redis_url: str, hour: list[MinuteCandle]
) -> None:
    cache = Cache(redis_url)
    h = handler(db, cache)
    outputs = [await h.handle(c, "redeliver") for c in hour]
    closing = next(i for i, out in enumerate(outputs) if any(isinstance(m, RegimeUpdate) for m in out))
    assert hour[closing].ts_open.minute == 59
    assert await regime_rows(db, "redeliver") == 1

    assert await h.handle(hour[-1], "redeliver") == outputs[-1]  # the last candle again
    assert await h.handle(hour[closing], "redeliver") == outputs[closing]  # a late redelivery
    assert await regime_rows(db, "redeliver") == 1  # its regime_history row is not written twice
    assert await cache.get(keys.market_regime("USDT-ETH", "redeliver")) == "UNKNOWN"
    assert 0 < await cache.ttl(keys.market_regime("USDT-ETH", "redeliver")) <= 7200
    assert await h.handle(hour[0], "redeliver") == ()  # older than every remembered output
    assert isinstance(outputs[0][-1], IndicatorSnapshot)
    await cache.close()


async def test_with_redis_down_the_regime_still_goes_out_and_into_regime_history(
    db: Database, private_redis: RedisProcess, hour: list[MinuteCandle]
) -> None:
    cache = Cache(private_redis.url)
    private_redis.stop()
    before = REGISTRY.get_sample_value("coinpilot_indicator_regime_cache_failures_total") or 0.0
    h = handler(db, cache)
    outputs = [m for c in hour for m in await h.handle(c, "no-redis")]
    assert len([m for m in outputs if isinstance(m, RegimeUpdate)]) == 1
    assert await regime_rows(db, "no-redis") == 1
    assert REGISTRY.get_sample_value("coinpilot_indicator_regime_cache_failures_total") == before + 1
    await cache.close()


async def test_saved_regimes_store_every_field_of_the_update(db: Database) -> None:
    update = RegimeUpdate(
        symbol="USDT-ETH",
        ts_event=datetime(2023, 3, 20, 5, 0, tzinfo=UTC),
        as_of=datetime(2023, 3, 20, 4, 0, tzinfo=UTC),
        regime=Regime.BULL,
        ma50=1790.123456789,
        ma200=1750.5,
        diff_pct=2.29876543,
        hourly_count=200,
    )
    bare = update.model_copy(update={"symbol": "USDT-BTC", "ma50": None, "ma200": None, "diff_pct": None})
    await state.save_regimes(db, "fields", [update, bare])
    await state.save_regimes(db, "fields", [update])  # a repeat writes nothing
    async with db.session() as session:
        rows = (
            (
                await session.execute(
                    select(RegimeHistory).where(RegimeHistory.run_id == "fields").order_by("id")
                )
            )
            .scalars()
            .all()
        )
    assert [(r.symbol, r.as_of, r.regime, r.hourly_count, r.detected_at) for r in rows] == [
        ("USDT-ETH", update.as_of, "BULL", 200, update.ts_event),
        ("USDT-BTC", update.as_of, "BULL", 200, update.ts_event),
    ]
    assert (rows[0].ma50, rows[0].ma200, rows[0].diff_pct) == (
        Decimal("1790.12345679"),  # numeric(28, 8)
        Decimal("1750.5"),
        Decimal("2.2988"),
    )
    assert (rows[1].ma50, rows[1].ma200, rows[1].diff_pct) == (None, None, None)
