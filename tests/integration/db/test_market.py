"""market_data: the COPY import is idempotent and corrects changed candles; reads filter the interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coinpilot.candle_files import load_candles as read_candle_files
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, MarketData
from coinpilot.db.market import (
    CandleRow,
    copy_candles,
    insert_candles,
    last_candle_time,
    latest_candles,
    load_candles,
    load_hourly_candles,
    upsert_candle,
)

pytestmark = pytest.mark.postgres

T0 = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def minute(symbol: str, i: int, close: str = "100", volume: str = "1.5") -> MinuteCandle:
    start = T0 + i * MINUTE
    price = Decimal(close)
    return MinuteCandle(
        symbol=symbol,
        ts_open=start,
        ts_event=start + MINUTE,
        open=price - 1,
        high=price + 2,
        low=price - 3,
        close=price,
        volume=Decimal(volume),
    )


async def count_rows(db: Database, symbol: str) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).where(MarketData.symbol == symbol)) or 0)


async def test_importing_the_same_candles_twice_writes_them_once(db: Database) -> None:
    candles = [minute("KRW-CPA", i, close=str(100 + i)) for i in range(50)]
    assert await copy_candles(db, candles) == 50
    assert await copy_candles(db, candles) == 0
    assert await count_rows(db, "KRW-CPA") == 50


async def test_a_reimport_corrects_a_candle_whose_values_changed(db: Database) -> None:
    candles = [minute("KRW-CPB", i) for i in range(5)]
    await copy_candles(db, candles)
    corrected = [*candles[:4], minute("KRW-CPB", 4, close="123.45678901", volume="9")]
    assert await copy_candles(db, corrected) == 1
    async with db.session() as session:
        loaded = await load_candles(session, "KRW-CPB", T0, T0 + 10 * MINUTE)
    assert loaded == corrected, "8 decimals and the corrected close/volume survive the round trip"


async def test_the_last_copy_of_a_candle_in_one_batch_wins(db: Database) -> None:
    batch = [minute("KRW-CPC", 0, close="100"), minute("KRW-CPC", 0, close="105")]
    assert await copy_candles(db, batch) == 1
    async with db.session() as session:
        (loaded,) = await load_candles(session, "KRW-CPC", T0, T0 + MINUTE)
    assert loaded.close == Decimal("105")


async def test_load_candles_reads_only_the_asked_interval_in_ascending_order(db: Database) -> None:
    minutes = [minute("KRW-CPD", i) for i in reversed(range(3))]
    other = [
        CandleRow("KRW-CPD", interval, T0, Decimal(1), Decimal(9), Decimal(1), Decimal(5), Decimal(7))
        for interval in ("1h", "1d")
    ]
    await copy_candles(db, [*minutes, *other])
    async with db.session() as session:
        loaded = await load_candles(session, "KRW-CPD", T0, T0 + timedelta(days=1))
        latest = await latest_candles(session, "KRW-CPD", limit=2)
        newest_hour = await last_candle_time(session, "KRW-CPD", "1h")
    assert loaded == sorted(minutes, key=lambda c: c.ts_open)
    assert latest == loaded[-2:]
    assert newest_hour == T0
    with pytest.raises(ValueError, match="interval must be '1m'"):
        async with db.session() as session:
            await load_candles(session, "KRW-CPD", T0, T0 + MINUTE, interval="1h")


async def test_load_candles_treats_end_as_exclusive(db: Database) -> None:
    await copy_candles(db, [minute("KRW-CPE", i) for i in range(4)])
    async with db.session() as session:
        loaded = await load_candles(session, "KRW-CPE", T0 + MINUTE, T0 + 3 * MINUTE)
    assert [c.ts_open for c in loaded] == [T0 + MINUTE, T0 + 2 * MINUTE]


async def test_upsert_candle_inserts_then_skips_an_identical_candle_then_corrects_a_changed_one(
    db: Database,
) -> None:
    async with db.session() as session:
        assert await upsert_candle(session, minute("KRW-CPF", 0)) is True
        assert await upsert_candle(session, minute("KRW-CPF", 0)) is False
        assert await upsert_candle(session, minute("KRW-CPF", 0, close="101")) is True
        assert await last_candle_time(session, "KRW-CPF") == T0
        assert await last_candle_time(session, "KRW-NONE") is None
        (loaded,) = await load_candles(session, "KRW-CPF", T0, T0 + MINUTE)
    assert loaded.close == Decimal("101")


async def test_hourly_candles_are_built_with_date_bin_from_the_minutes_of_each_hour(db: Database) -> None:
    minutes = [minute("KRW-CPG", i, close=str(100 + i)) for i in range(90)]
    await copy_candles(db, minutes)
    async with db.session() as session:
        first, second = await load_hourly_candles(session, "KRW-CPG", T0, T0 + timedelta(hours=2))
    assert (first.ts_open, first.minute_count, second.minute_count) == (T0, 60, 30)
    assert first.open == minutes[0].open and first.close == minutes[59].close
    assert first.high == max(c.high for c in minutes[:60]) and first.low == min(c.low for c in minutes[:60])
    assert second.volume == sum(c.volume for c in minutes[60:])
    assert second.close == minutes[89].close


async def test_real_candles_from_the_shared_data_round_trip_exactly(db: Database, shared_data: Path) -> None:
    path = shared_data / "XRP_USDT-1m-20230401-20230501.csv.gz"
    start = datetime(2023, 4, 10, tzinfo=UTC)
    real = read_candle_files([path], start=start, end=start + timedelta(hours=6))
    assert len(real) == 360
    assert await copy_candles(db, real) == 360
    assert await copy_candles(db, real) == 0
    async with db.session() as session:
        loaded = await load_candles(session, "USDT-XRP", start, start + timedelta(hours=6))
    assert loaded == real


async def test_candles_from_the_bus_never_change_a_recorded_minute(db: Database) -> None:
    """insert_candles (the recorder): new minutes inserted, the same values again a no-op, other
    values a conflict that rolls the whole run back and names the values that stand."""
    first = [minute("KRW-CPM", i, close=str(100 + i)) for i in range(3)]
    assert await insert_candles(db, first) == (3, {})
    assert await insert_candles(db, first) == (0, {})  # a redelivery, a replay of the same data
    # the same values at more decimals than the column keeps are the same candle
    fine = first[0].model_copy(update={"volume": Decimal("1.500000001")})
    assert await insert_candles(db, [fine]) == (0, {})

    changed = first[1].model_copy(update={"close": Decimal("100.5")})
    new = minute("KRW-CPM", 3)
    written, conflicts = await insert_candles(db, [new, changed])
    assert written == 0 and list(conflicts) == [1]
    assert conflicts[1].close_price == first[1].close and conflicts[1].timestamp == first[1].ts_open
    assert await count_rows(db, "KRW-CPM") == 3  # nothing of that run was kept
    async with db.session() as session:
        (stored,) = await load_candles(session, "KRW-CPM", first[1].ts_open, first[1].ts_event)
    assert stored == first[1]

    # a minute twice in one run: the first stands, other values in the second are a conflict
    again = new.model_copy(update={"close": new.high})
    written, conflicts = await insert_candles(db, [new, new, again])
    assert written == 0 and list(conflicts) == [2] and conflicts[2].close_price == new.close
    assert await insert_candles(db, [new, new]) == (1, {})
