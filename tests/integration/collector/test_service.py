"""The collector as it runs: the recorder consumer in the real runtime, the backfill-then-poll task,
and ``coinpilot import``, over a real NATS JetStream and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from sqlalchemy import func, select

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.candle_files import frame_to_candles, read_frame
from coinpilot.contracts import DeadLetter, MinuteCandle
from coinpilot.db import Database, MarketData
from coinpilot.runtime import Runtime
from coinpilot.settings import CommonSettings
from services.collector.app import DURABLE, collect
from services.collector.importer import import_files, run_import
from services.collector.settings import CollectorSettings
from tests.integration.collector.conftest import NOW, minutes
from tests.integration.collector.fake_upbit import FakeUpbit, ManualClock
from tests.support.servers import NatsProcess, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "market" / "BTC_USDT-1m-20230324-gap.csv.gz"


def fixture_candles() -> list[MinuteCandle]:
    return list(frame_to_candles(read_frame(FIXTURE)))


async def count_rows(db: Database, symbol: str) -> int:
    m = MarketData.__table__.c
    async with db.session() as session:
        statement = select(func.count()).where(m.symbol == symbol, m.interval == "1m")
        return (await session.execute(statement)).scalar_one()


async def stream_candles(js: JetStreamContext, symbol: str) -> list[MinuteCandle]:
    info = await js.stream_info("CANDLES")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1 if info.state.messages else 0):
        msg = await js.get_msg("CANDLES", seq)
        if msg.subject == f"candles.1m.{symbol}":
            out.append(MinuteCandle.from_json(msg.data))
    return out


async def test_the_recorder_writes_each_candle_once_and_never_overwrites_a_recorded_minute(
    js: JetStreamContext, db: Database, collector_nats: NatsProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COINPILOT_COLLECTOR_UPBIT_ENABLED", "false")
    settings = CommonSettings(nats_url=collector_nats.url, database_url=db.url, redis_url=None, http_port=0)
    host = ServiceHost(["collector"], settings, serve_http=False)
    await host.start()
    try:
        candles = fixture_candles()[:30]
        bus = Bus(js, "test")
        for c in candles:
            await bus.publish(c, run_id="live")
        for c in candles:  # a replay run: other message ids, so JetStream delivers them again
            await bus.publish(c, run_id="replay-1")
        corrected = candles[0].model_copy(update={"close": candles[0].low, "volume": Decimal("1.5")})
        await bus.publish(corrected, run_id="correction")

        async def drained() -> bool:
            info = await js.consumer_info("CANDLES", DURABLE)
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 61

        await wait_for(drained, timeout=20)
    finally:
        await host.stop()
    assert await count_rows(db, "USDT-BTC") == 30
    m = MarketData.__table__.c
    async with db.session() as session:
        first = (
            await session.execute(
                select(m.close_price, m.volume).where(
                    m.symbol == "USDT-BTC", m.timestamp == candles[0].ts_open
                )
            )
        ).one()
    assert tuple(first) == (candles[0].close, candles[0].volume)  # the recorded candle stands
    info = await js.stream_info("DLQ")
    letters = [
        DeadLetter.from_json((await js.get_msg("DLQ", seq)).data)
        for seq in range(info.state.first_seq, info.state.last_seq + 1 if info.state.messages else 0)
    ]
    (letter,) = [d for d in letters if d.subject_original == "candles.1m.USDT-BTC"]
    assert letter.service == "collector" and letter.headers[h.RUN_ID] == "correction"
    assert "RefusedMessage: CONFLICTING_REPUBLISH:" in letter.reason  # the other values were refused


async def test_the_collector_task_backfills_then_publishes_each_new_minute(
    js: JetStreamContext, db: Database, upbit: FakeUpbit, clock: ManualClock
) -> None:
    settings = CollectorSettings(upbit_base_url=upbit.url, backfill_lookback_minutes=600, timeout_seconds=1.0)
    clock.limit = NOW + minutes(5)
    rt = Runtime("collector", CommonSettings(), Bus(js, "collector"), db, None, logging.getLogger("test"))
    task = asyncio.create_task(collect(rt, db, settings, clock, ["KRW-BTC", "KRW-ETH"]))
    try:
        await asyncio.wait_for(clock.parked.wait(), timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await count_rows(db, "KRW-BTC") == 600 - 1 - 80  # 10 h back, minus the forming minute and the gap
    for symbol in ("KRW-BTC", "KRW-ETH"):
        published = [c.ts_open for c in await stream_candles(js, symbol)]
        assert published == [NOW.replace(second=0) + minutes(m) for m in range(5)]  # 20:00 .. 20:04


async def test_import_writes_a_file_once_and_publishes_every_candle_once_in_order(
    js: JetStreamContext, db: Database, collector_nats: NatsProcess
) -> None:
    first = await import_files([FIXTURE], db)
    assert (first.files, first.rows, first.written, first.published) == (1, 220, 220, 0)
    assert (await import_files([FIXTURE.parent], db)).written == 0  # a directory; nothing new
    assert await count_rows(db, "USDT-BTC") == 220

    published = await import_files([FIXTURE], db, Bus(js, "collector"))
    assert published.published == 220
    settings = CommonSettings(nats_url=collector_nats.url, database_url=db.url, redis_url=None)
    assert await run_import(settings, [FIXTURE], publish=True) == 0  # the CLI path; nothing new anywhere
    stored = await stream_candles(js, "USDT-BTC")
    assert stored == fixture_candles()  # once each (message ids dedup the second publish), in time order
    steps = [b.ts_open - a.ts_open for a, b in pairwise(stored)]
    assert max(steps) == timedelta(minutes=81)  # the real gap (12:40-13:59) is kept
