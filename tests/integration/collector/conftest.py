"""Collector integration fixtures: a migrated database of this package's own, a private NATS, the
fake Upbit serving the March 2023 BTC (as KRW-BTC) and ETH (as KRW-ETH) candles, a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import text

from coinpilot.bus import ensure_streams
from coinpilot.db import Database, upgrade
from tests.integration.collector.fake_upbit import FakeUpbit, ManualClock, Series, load_series
from tests.support.servers import NatsProcess, create_database, drop_database

BTC_2023 = "BTC_USDT-1m-20230316-20230501.csv.gz"
ETH_2023 = "ETH_USDT-1m-20230316-20230501.csv.gz"
NOW = datetime(2023, 3, 24, 20, 0, 30, tzinfo=UTC)
"""Eight hours after the real gap (no candle 12:40-13:59 UTC on 2023-03-24)."""
SERVED_FROM = datetime(2023, 3, 20, tzinfo=UTC)
SERVED_UNTIL = datetime(2023, 3, 25, tzinfo=UTC)


@pytest.fixture(scope="session")
def served(shared_data: Path) -> dict[str, Series]:
    return {
        "KRW-BTC": load_series(shared_data / BTC_2023, SERVED_FROM, SERVED_UNTIL),
        "KRW-ETH": load_series(shared_data / ETH_2023, SERVED_FROM, SERVED_UNTIL),
    }


@pytest.fixture(scope="module")
async def collector_db() -> AsyncIterator[Database]:
    name, url = await create_database("cp_collector")
    await upgrade(url)
    db = Database(url)
    yield db
    await db.dispose()
    await drop_database(name)


@pytest.fixture
async def db(collector_db: Database) -> Database:
    """The module's database with an empty market_data."""
    async with collector_db.session() as session:
        await session.execute(text("TRUNCATE market_data"))
    return collector_db


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def upbit(clock: ManualClock, served: dict[str, Series]) -> Iterator[FakeUpbit]:
    fake = FakeUpbit(clock, served).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def collector_nats() -> Iterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def js(collector_nats: NatsProcess) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(collector_nats.url)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.delete_stream("CANDLES")  # a new stream also forgets the message ids it deduplicated
    await ensure_streams(js)
    yield js
    await nc.close()


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
