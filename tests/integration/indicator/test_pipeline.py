"""Candles in, indicators and regimes out, through the real runtime, NATS, PostgreSQL and Redis.

History (the March 2023 BTC file, as ``USDT-BTC``) is bulk-loaded into ``market_data`` first, so
the indicator starts by warming its windows from there; the collector's recorder and the
indicator then run as services. Every snapshot, hourly candle and regime that comes out must be
exactly what the batch path computes over the uninterrupted history: after the warm-up, after a
restart of the services, and after a gap that only ``market_data`` holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from redis.asyncio import Redis
from sqlalchemy import func, select

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.cache import keys
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Contract, HourlyCandle, IndicatorSnapshot, MinuteCandle, RegimeUpdate
from coinpilot.db import Database, MarketData, RegimeHistory
from coinpilot.db.market import copy_candles
from coinpilot.settings import CommonSettings
from services.indicator.core import history_messages
from tests.support.servers import NatsProcess, wait_for

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.usefixtures("collector_only_records"),
]

SYMBOL = "USDT-BTC"
CUT = 16_000  # 266 hours of stored history: the regime is known from the first live candle on
DURABLES = (("CANDLES", "indicator-candles"), ("CANDLES", "collector-recorder"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.delete(keys.market_regime(SYMBOL), keys.market_regime(SYMBOL, "replay-a"))
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def candles(shared_data: Path) -> list[MinuteCandle]:
    return load_candles([shared_data / "BTC_USDT-1m-20230316-20230501.csv.gz"])[: CUT + 400]


@pytest.fixture(scope="module")
def expected(candles: list[MinuteCandle]) -> dict[object, list[Contract]]:
    """What an uninterrupted run emits, per candle open time (batch path over the whole history)."""
    out: dict[object, list[Contract]] = {}
    current: list[Contract] = []
    for m in history_messages(candles):
        current.append(m)
        if isinstance(m, IndicatorSnapshot):
            out[m.candle.ts_open] = current
            current = []
    return out


async def start(nats_server: NatsProcess, db: Database, redis_url: str) -> ServiceHost:
    settings = CommonSettings(
        nats_url=nats_server.url, database_url=db.url, redis_url=redis_url, http_port=0, ack_wait_seconds=5
    )
    host = ServiceHost(["collector", "indicator"], settings, serve_http=False)
    await host.start()
    return host


async def drained(js: JetStreamContext) -> bool:
    for stream, durable in DURABLES:
        info = await js.consumer_info(stream, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def outputs(js: JetStreamContext, run_id: str) -> list[Contract]:
    """Everything the indicator published for ``run_id``, in stream order per stream."""
    parsers = {"indicators.1m.": IndicatorSnapshot, "regime.": RegimeUpdate, "candles.1h.": HourlyCandle}
    out: list[Contract] = []
    for stream in ("CANDLES", "INDICATORS"):
        info = await js.stream_info(stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1 if info.state.messages else 0):
            msg = await js.get_msg(stream, seq)
            if (msg.headers or {}).get(h.RUN_ID) != run_id:
                continue
            for prefix, model in parsers.items():
                if msg.subject.startswith(prefix):
                    out.append(model.from_json(msg.data))
    return out


def of(kind: type, messages: list[Contract]) -> list[Contract]:
    return [m for m in messages if isinstance(m, kind)]


async def publish(js: JetStreamContext, batch: list[MinuteCandle], run_id: str = "live") -> None:
    bus = Bus(js, "test")
    for candle in batch:
        await bus.publish(candle, run_id=run_id)


async def test_indicators_and_regimes_equal_the_batch_after_warm_up_restart_and_a_gap_filled_in_market_data(
    js: JetStreamContext,
    db: Database,
    nats_server: NatsProcess,
    redis: Redis,
    redis_url: str,
    candles: list[MinuteCandle],
    expected: dict[object, list[Contract]],
) -> None:
    assert await copy_candles(db, candles[:CUT]) == CUT

    def want(lo: int, hi: int) -> list[Contract]:
        return [m for c in candles[lo:hi] for m in expected[c.ts_open]]

    host = await start(nats_server, db, redis_url)
    try:
        live = candles[CUT : CUT + 150]
        await publish(js, live)
        await publish(js, live[:30], run_id="replay-a")  # the same candles again, as another run
        await wait_for(lambda: drained(js), timeout=60)
    finally:
        await host.stop()

    got = await outputs(js, "live")
    for kind in (IndicatorSnapshot, HourlyCandle, RegimeUpdate):
        assert of(kind, got) == of(kind, want(CUT, CUT + 150)), kind.__name__
    regimes = of(RegimeUpdate, got)
    assert len(regimes) >= 2 and all(r.regime.value != "UNKNOWN" for r in regimes)
    assert of(IndicatorSnapshot, await outputs(js, "replay-a")) == of(IndicatorSnapshot, want(CUT, CUT + 30))

    async with db.session() as session:
        m = MarketData.__table__.c
        rows = await session.execute(
            select(func.count()).where(m.symbol == SYMBOL, m.timestamp >= live[0].ts_open)
        )
        assert rows.scalar_one() == 150  # recorded once, although 30 of them were published twice
        history = (
            await session.execute(
                select(RegimeHistory.as_of, RegimeHistory.regime, RegimeHistory.hourly_count)
                .where(RegimeHistory.run_id == "live", RegimeHistory.symbol == SYMBOL)
                .order_by(RegimeHistory.as_of)
            )
        ).all()
    assert [tuple(r) for r in history] == [(u.as_of, u.regime.value, u.hourly_count) for u in regimes]
    assert await redis.get(keys.market_regime(SYMBOL)) == regimes[-1].regime.value
    assert 0 < await redis.ttl(keys.market_regime(SYMBOL)) <= 7200

    # A restart: the new indicator warms from market_data and goes on as if nothing happened.
    host = await start(nats_server, db, redis_url)
    try:
        await publish(js, candles[CUT + 150 : CUT + 210])
        await wait_for(lambda: drained(js), timeout=60)
        # The collector's backfill stores 30 minutes the stream never carried; the indicator sees
        # the jump, finds them in market_data, and rebuilds its window from there: no gap.
        assert await copy_candles(db, candles[CUT + 210 : CUT + 240]) == 30
        await publish(js, candles[CUT + 240 : CUT + 300])
        await wait_for(lambda: drained(js), timeout=60)
    finally:
        await host.stop()
    got = await outputs(js, "live")
    resumed = [
        m
        for m in got
        if not isinstance(m, IndicatorSnapshot) or m.candle.ts_open >= candles[CUT + 150].ts_open
    ]
    expected_resumed = want(CUT + 150, CUT + 210) + want(CUT + 240, CUT + 300)
    for kind in (IndicatorSnapshot, HourlyCandle, RegimeUpdate):
        assert of(kind, resumed)[-len(of(kind, expected_resumed)) or len(resumed) :] == of(
            kind, expected_resumed
        )
    after_gap = of(IndicatorSnapshot, got)[-60]
    assert after_gap.candle == candles[CUT + 240] and after_gap.gap_minutes == 0


async def test_one_symbols_missing_minutes_never_hold_back_another(
    js: JetStreamContext, db: Database, nats_server: NatsProcess, redis_url: str, shared_data: Path
) -> None:
    sol = load_candles([shared_data / "SOL_USDT-1m-20230316-20230501.csv.gz"])[:30]
    doge = load_candles([shared_data / "DOGE_USDT-1m-20230316-20230501.csv.gz"])[:60]
    doge = doge[:10] + doge[40:]  # 30 minutes missing after the 10th
    host = await start(nats_server, db, redis_url)
    try:
        for i in range(30):
            await publish(js, [sol[i], doge[i]])
        await wait_for(lambda: drained(js), timeout=60)
    finally:
        await host.stop()
    snapshots = of(IndicatorSnapshot, await outputs(js, "live"))
    by_symbol = {s: [m for m in snapshots if m.symbol == s] for s in ("USDT-SOL", "USDT-DOGE")}
    assert [m.candle for m in by_symbol["USDT-SOL"]] == sol
    assert [m.candle for m in by_symbol["USDT-DOGE"]] == doge
    assert [m.gap_minutes for m in by_symbol["USDT-DOGE"]][9:12] == [0, 30, 0]
    assert by_symbol["USDT-DOGE"][-1].window_has_gap and not by_symbol["USDT-SOL"][-1].window_has_gap
    assert by_symbol["USDT-SOL"][0].missing and by_symbol["USDT-SOL"][-1].rsi_14 is not None
