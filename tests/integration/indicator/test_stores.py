"""The indicator's two stores answer the warm-up read alike: ``market_data`` on PostgreSQL and the
memory store over the same candles give the same recent window, hourly buckets and gap answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from services.indicator.core import DEFAULT_CONFIG
from services.indicator.memory_store import MemoryIndicatorStore
from services.indicator.state import MarketDataStore
from services.indicator.stores import load_history
from tests.support.servers import create_database, drop_database

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def candles(shared_data: Path) -> list[MinuteCandle]:
    """Three days of ETH with the minutes 10:00-10:29 of the second day cut out (a gap)."""
    rows = load_candles([shared_data / "ETH_USDT-1m-20230316-20230501.csv.gz"])[: 3 * 1440]
    cut = rows[1440].ts_open.replace(hour=10, minute=0)
    return [c for c in rows if not cut <= c.ts_open < cut + timedelta(minutes=30)]


@pytest.fixture
async def db(candles: list[MinuteCandle]) -> AsyncIterator[Database]:
    name, url = await create_database("cp_indicator_stores")
    await upgrade(url)
    database = Database(url)
    await copy_candles(database, candles)
    yield database
    await database.dispose()
    await drop_database(name)


async def test_both_stores_answer_the_warm_up_read_alike(db: Database, candles: list[MinuteCandle]) -> None:
    pg, memory = MarketDataStore(db, None), MemoryIndicatorStore(lambda symbol: candles)
    symbol = candles[0].symbol
    for before in (candles[30].ts_open, candles[1500].ts_open, candles[-1].ts_open + timedelta(minutes=1)):
        assert await load_history(pg, symbol, before, DEFAULT_CONFIG) == await load_history(
            memory, symbol, before, DEFAULT_CONFIG
        )
    gap_start = candles[1440].ts_open.replace(hour=9, minute=59)
    after_gap = gap_start + timedelta(minutes=31)
    spans = [
        (gap_start, after_gap),
        (candles[5].ts_open, candles[6].ts_open),
        (candles[5].ts_open, candles[8].ts_open),
    ]
    for after, before in spans:
        assert await pg.has_candles_between(symbol, after, before) == await memory.has_candles_between(
            symbol, after, before
        )
    assert not await memory.has_candles_between(symbol, gap_start, after_gap)
    assert await memory.has_candles_between(symbol, candles[5].ts_open, candles[8].ts_open)
