"""What a replay published into a NATS starts from: the run's 1m candles, from the stream while it
holds them, from ``market_data`` once they aged out, and a clear error when neither can say."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import nats
import pytest
from sqlalchemy import text

from apps.stage_replay.distributed import NoRecordedCandles, run_candles, unpadded
from coinpilot.bus import ensure_streams
from coinpilot.bus.publisher import Bus
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from tests.support.servers import create_database, drop_database

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def minute(symbol: str, k: int) -> MinuteCandle:
    price = Decimal(1000 + k)
    return MinuteCandle(
        ts_event=T0 + timedelta(minutes=k + 1),
        symbol=symbol,
        ts_open=T0 + timedelta(minutes=k),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(2),
    )


@pytest.fixture(scope="module")
async def db() -> AsyncIterator[Database]:
    name, url = await create_database("cp_run_candles")
    await upgrade(url)
    database = Database(url)
    yield database
    await database.dispose()
    await drop_database(name)


async def test_the_streams_candles_come_first_in_time_then_symbol_order(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        bus = Bus(js, "replay")
        run, other = f"rc-{uuid.uuid4().hex[:8]}", f"rc-{uuid.uuid4().hex[:8]}"
        for candle in (minute("KRW-ETH", 0), minute("KRW-BTC", 1), minute("KRW-BTC", 0)):
            await bus.publish(candle, run_id=run)
        await bus.publish(minute("KRW-XRP", 0), run_id=other)
        skipped: Counter[str] = Counter()
        found = await run_candles(js, None, run, start=None, end=None, skipped=skipped)
    finally:
        await nc.close()
    assert found == [minute("KRW-BTC", 0), minute("KRW-ETH", 0), minute("KRW-BTC", 1)]
    assert not skipped


async def test_aged_out_candles_are_read_from_market_data_for_the_runs_symbols(
    nats_url: str, db: Database
) -> None:
    run = f"rc-{uuid.uuid4().hex[:8]}"
    await copy_candles(db, [minute(s, k) for s in ("KRW-BTC", "KRW-ETH", "KRW-XRP") for k in range(5)])
    async with db.session() as s:
        await s.execute(
            text("INSERT INTO strategy_state (run_id, symbol) VALUES (:r, 'KRW-BTC')"), {"r": run}
        )
        await s.execute(
            text(
                "INSERT INTO regime_history (run_id, symbol, as_of, regime) "
                "VALUES (:r, 'KRW-ETH', :t, 'BULL')"
            ),
            {"r": run, "t": T0},
        )
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        skipped: Counter[str] = Counter()
        window = {"start": T0 + timedelta(minutes=1), "end": T0 + timedelta(minutes=3)}
        found = await run_candles(js, db, run, skipped=skipped, **window)
        with pytest.raises(NoRecordedCandles, match="give --from and --to"):
            await run_candles(js, db, run, start=None, end=None, skipped=Counter())
        with pytest.raises(NoRecordedCandles, match="no symbol of run"):
            await run_candles(js, db, f"{run}-unknown", skipped=Counter(), **window)
    finally:
        await nc.close()
    assert found == [minute(s, k) for k in (1, 2) for s in ("KRW-BTC", "KRW-ETH")]
    assert skipped == {"read from market_data (aged out of the stream)": 1}


def test_a_candle_read_back_from_market_data_loses_the_padding_numeric_20_8_added() -> None:
    padding = {"close": "1774.18000000", "volume": "1800000.00000000", "low": "1700.50000000"}
    padded = minute("KRW-BTC", 3).model_copy(update={k: Decimal(v) for k, v in padding.items()})
    back = unpadded(padded)
    assert (str(back.close), str(back.volume), str(back.low)) == ("1774.18", "1800000", "1700.5")
    assert back == padded  # the same numbers
