"""Polling against the local Upbit into a real NATS JetStream: each closed candle exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from nats.js import JetStreamContext

from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database
from services.collector.poller import poll_forever, poll_once, poll_symbol
from services.collector.upbit import RetryPolicy, UpbitClient
from tests.integration.collector.conftest import minutes
from tests.integration.collector.fake_upbit import FakeUpbit, ManualClock, Series

pytestmark = pytest.mark.nats

START = datetime(2023, 3, 24, 12, 20, tzinfo=UTC)


def client(upbit: FakeUpbit, clock: ManualClock) -> UpbitClient:
    return UpbitClient(upbit.url, clock=clock, timeout_seconds=1.0, retry=RetryPolicy(2, 0.05, 0.1))


async def published(js: JetStreamContext, symbol: str) -> list[tuple[MinuteCandle, str]]:
    """Every message stored on candles.1m.<symbol>, in stream order, with its Nats-Msg-Id."""
    info = await js.stream_info("CANDLES")
    out: list[tuple[MinuteCandle, str]] = []
    if not info.state.messages:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("CANDLES", seq)
        if msg.subject == f"candles.1m.{symbol}":
            out.append((MinuteCandle.from_json(msg.data), (msg.headers or {})[h.MSG_ID]))
    return out


def file_candles(series: Series, symbol: str, after: datetime, until: datetime) -> list[MinuteCandle]:
    out = []
    for t, (o, hi, lo, c, v) in zip(series.starts, series.values, strict=True):
        start = datetime.fromtimestamp(t, UTC)
        if after < start and start + timedelta(minutes=1) <= until:
            out.append(
                MinuteCandle(
                    symbol=symbol,
                    ts_open=start,
                    ts_event=start + timedelta(minutes=1),
                    open=Decimal(o),
                    high=Decimal(hi),
                    low=Decimal(lo),
                    close=Decimal(c),
                    volume=Decimal(v),
                )
            )
    return out


async def test_polling_publishes_each_closed_candle_once_in_time_order_and_never_a_forming_one(
    js: JetStreamContext, upbit: FakeUpbit, clock: ManualClock, served: dict[str, Series]
) -> None:
    bus, upbit_client = Bus(js, "collector"), client(upbit, clock)
    last: dict[str, datetime | None] = {"KRW-BTC": START - minutes(1)}
    polls = [START + minutes(m) + timedelta(seconds=2) for m in range(1, 160)]
    pause = (START + minutes(105), START + minutes(115))  # 10 minutes without a poll, after the gap
    polls = [t for t in polls if not pause[0] <= t < pause[1]]
    polls.insert(5, polls[5])  # the same minute polled twice
    for t in polls:
        clock.set(t)
        await poll_once(upbit_client, bus, None, ["KRW-BTC"], last, t)

    out = await published(js, "KRW-BTC")
    want = file_candles(served["KRW-BTC"], "KRW-BTC", START - minutes(1), polls[-1])
    assert [c for c, _ in out] == want  # exact values of closed candles (forming ones differ), in order
    assert [i for _, i in out] == [c.msg_id() for c in want]  # Nats-Msg-Id candle:1m:<SYM>:<start>
    assert len({i for _, i in out}) == len(out) == 79  # 159 minutes minus the 80-minute gap
    after_pause = next(r for r in upbit.requests if r.at >= pause[1].timestamp())
    assert after_pause.count == 13  # the last published one, the 11 missed ones and the forming one
    assert last["KRW-BTC"] == want[-1].ts_open
    await upbit_client.close()


async def test_the_poll_loop_wakes_just_after_each_minute_boundary(
    js: JetStreamContext, upbit: FakeUpbit, clock: ManualClock
) -> None:
    clock.set(START + timedelta(seconds=17))
    clock.limit = START + minutes(20)
    bus, upbit_client = Bus(js, "collector"), client(upbit, clock)
    last: dict[str, datetime | None] = {"KRW-ETH": START - minutes(1), "KRW-BTC": START - minutes(1)}
    loop = asyncio.create_task(
        poll_forever(
            upbit_client, bus, None, ["KRW-ETH", "KRW-BTC"], last, clock, offset=timedelta(seconds=2)
        )
    )
    try:
        await asyncio.wait_for(clock.parked.wait(), timeout=20)  # it wants to sleep past 12:40
        assert len(upbit.requests) == 38  # 19 minutes x 2 symbols
        assert [r.at - int(r.at) for r in upbit.requests[:2]] == [0.0, 0.125]  # paced at 8 per second
        assert {int(r.at) % 60 for r in upbit.requests} == {2}  # 2 s after each minute boundary
        assert len(await published(js, "KRW-ETH")) == len(await published(js, "KRW-BTC")) == 19
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await upbit_client.close()


async def test_one_symbol_failing_never_stops_the_others(
    js: JetStreamContext, upbit: FakeUpbit, clock: ManualClock
) -> None:
    upbit.always_failing.add("KRW-ETH")
    bus, upbit_client = Bus(js, "collector"), client(upbit, clock)
    last: dict[str, datetime | None] = {"KRW-ETH": START - minutes(1), "KRW-BTC": START - minutes(1)}
    for m in range(1, 4):
        clock.set(START + minutes(m) + timedelta(seconds=2))
        await poll_once(upbit_client, bus, None, ["KRW-ETH", "KRW-BTC"], last, clock.now())
    assert len(await published(js, "KRW-BTC")) == 3
    assert await published(js, "KRW-ETH") == []
    assert last["KRW-ETH"] == START - minutes(1)  # retried from there once Upbit answers again
    upbit.always_failing.clear()
    clock.set(START + minutes(4) + timedelta(seconds=2))
    await poll_once(upbit_client, bus, None, ["KRW-ETH", "KRW-BTC"], last, clock.now())
    assert len(await published(js, "KRW-ETH")) == 4
    await upbit_client.close()


@pytest.mark.postgres
async def test_a_symbol_hours_behind_is_stored_without_publishing_the_hole(
    js: JetStreamContext, db: Database, upbit: FakeUpbit, clock: ManualClock
) -> None:
    now = START + timedelta(hours=6, seconds=2)
    clock.set(now)
    bus, upbit_client = Bus(js, "collector"), client(upbit, clock)
    newest = await poll_symbol(upbit_client, bus, db, "KRW-BTC", START, now)
    assert newest == now - timedelta(minutes=1, seconds=2)
    assert await published(js, "KRW-BTC") == []
    await upbit_client.close()
