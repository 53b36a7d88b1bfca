"""Bad candles on ``candles.1m.<SYM>`` are quarantined by both consumers, over real NATS, PostgreSQL
and Redis: the collector's recorder and the indicator run as services; every defect class is
dead-lettered by each with its rule, alerted once on ``risk.alerts``, never stored in
``market_data`` and never turned into an indicator snapshot, and the good candles around it are
handled as if it had not been there. Everything is published before the services start, so the
consumers meet the bad candles inside a fetched run (the batch falls back to one at a time).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from sqlalchemy import select

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.candle_files import load_candles
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import AlertType, DeadLetter, IndicatorSnapshot, MinuteCandle, RiskAlert
from coinpilot.db import Database, MarketData
from coinpilot.db.market import copy_candles
from coinpilot.market_checks import CandleRule
from coinpilot.settings import CommonSettings
from tests.support.servers import NatsProcess, wait_for

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.usefixtures("collector_only_records"),
]

SYMBOL = "USDT-BTC"
HISTORY = 250
DURABLES = ("indicator-candles", "collector-recorder")
MINUTE = timedelta(minutes=1)


def body(candle: MinuteCandle, **changes: object) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(candle.to_json())
    for key, value in changes.items():
        data[key] = value.isoformat() if isinstance(value, datetime) else str(value)
    return data


async def forge(
    js: JetStreamContext, subject: str, data: dict[str, Any], msg_id: str, run_id: str = "live"
) -> None:
    """What anyone with publish rights on ``candles.1m.>`` can send: any body, any message id."""
    headers = {"Nats-Msg-Id": msg_id, h.RUN_ID: run_id}
    await js.publish(subject, json.dumps(data).encode(), headers=headers)


async def stream(js: JetStreamContext, name: str) -> list[Any]:
    info = await js.stream_info(name)
    return [
        await js.get_msg(name, seq)
        for seq in range(info.state.first_seq, info.state.last_seq + 1 if info.state.messages else 0)
    ]


async def drained(js: JetStreamContext) -> bool:
    for durable in DURABLES:
        info = await js.consumer_info("CANDLES", durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


def rule_of(letter: DeadLetter) -> str:
    match = re.search(r"RefusedMessage: (\w+):", letter.reason)
    assert match, letter.reason
    return match.group(1)


async def test_every_defect_class_is_quarantined_by_the_recorder_and_the_indicator(
    js: JetStreamContext, db: Database, nats_server: NatsProcess, redis_url: str, shared_data: Path
) -> None:
    candles = load_candles([shared_data / "BTC_USDT-1m-20230316-20230501.csv.gz"])[: HISTORY + 10]
    assert await copy_candles(db, candles[:HISTORY]) == HISTORY
    g = candles[HISTORY:]
    bus = Bus(js, "test")
    subject = f"candles.1m.{SYMBOL}"
    future = wall_clock_now().replace(second=0, microsecond=0) + timedelta(days=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    zero = {k: 0 for k in ("open", "high", "low", "close")}
    forged: list[tuple[str, str, dict[str, Any], str]] = [  # (rule, subject, body, run id), in order
        (CandleRule.POSITIVE_PRICE, subject, body(g[3], **zero), "live"),
        (CandleRule.POSITIVE_PRICE, subject, body(g[4], low=-5), "live"),
        (CandleRule.OHLC, subject, body(g[5], high=g[5].low - 1), "live"),
        (CandleRule.VOLUME, subject, body(g[6], volume=-1), "live"),
        (CandleRule.FUTURE_TIME, subject, body(g[6], ts_open=future, ts_event=future + MINUTE), "live"),
        (CandleRule.PAST_TIME, subject, body(g[6], ts_open=epoch, ts_event=epoch + MINUTE), "live"),
        (
            CandleRule.PAST_TIME,  # behind the indicator's window
            subject,
            body(candles[0], ts_open=g[0].ts_open - 300 * MINUTE, ts_event=g[0].ts_open - 299 * MINUTE),
            "live",
        ),
        (CandleRule.SUBJECT_SYMBOL, "candles.1m.USDT-XRP", body(g[7]), "live"),
        (CandleRule.MOVE_BREAKER, subject, body(g[8], low=1, close=1), "live"),
        (CandleRule.CONFLICTING_REPUBLISH, subject, body(g[1], close=g[1].high), "live"),
        (  # a replay knows no wall clock: a candle 7 hours after its last one is ahead of it
            CandleRule.FUTURE_TIME,
            subject,
            body(g[1], ts_open=g[1].ts_open + 7 * 60 * MINUTE, ts_event=g[1].ts_event + 7 * 60 * MINUTE),
            "replay-q",
        ),
    ]
    for c in g[:3]:
        await bus.publish(c, run_id="live")
    for c in g[:2]:
        await bus.publish(c, run_id="replay-q")
    for k, (_, on, data, run_id) in enumerate(forged):
        await forge(js, on, data, f"forged-{k}", run_id)
        if k < 4:
            await bus.publish(g[3 + k], run_id="live")  # the good candle of the same minute, next
    await bus.publish(g[2], run_id="replay-q")
    for c in g[7:]:
        await bus.publish(c, run_id="live")

    settings = CommonSettings(
        nats_url=nats_server.url, database_url=db.url, redis_url=redis_url, http_port=0, ack_wait_seconds=5
    )
    host = ServiceHost(["collector", "indicator"], settings, serve_http=False)
    await host.start()
    try:
        await wait_for(lambda: drained(js), timeout=90)
    finally:
        await host.stop()

    expected = [str(rule) for rule, *_ in forged]
    letters = [DeadLetter.from_json(m.data) for m in await stream(js, "DLQ")]
    by_service = {s: [rule_of(d) for d in letters if d.service == s] for s in ("collector", "indicator")}
    assert by_service["collector"] == expected
    # a stored minute again is a repeat to the indicator (behind its last candle): it ignores it
    assert by_service["indicator"] == [r for r in expected if r != CandleRule.CONFLICTING_REPUBLISH]

    alerts = [RiskAlert.from_json(m.data) for m in await stream(js, "RISK") if m.subject == "risk.alerts"]
    rejected = [a for a in alerts if a.type is AlertType.CANDLE_REJECTED]
    assert len(rejected) == len(forged)  # one per candle, although both consumers refused most
    assert {a.level.value for a in rejected} == {"WARNING"} and {a.symbol for a in rejected} == {SYMBOL}

    m = MarketData.__table__.c
    async with db.session() as session:
        rows = (
            await session.execute(
                select(m.timestamp, m.open_price, m.high_price, m.low_price, m.close_price, m.volume)
                .where(m.symbol == SYMBOL)
                .order_by(m.timestamp)
            )
        ).all()
    stored = [(r[0], *(Decimal(v) for v in r[1:])) for r in rows]
    assert stored == [(c.ts_open, c.open, c.high, c.low, c.close, c.volume) for c in candles]  # g[1] stands

    snapshots = [
        IndicatorSnapshot.from_json(msg.data)
        for msg in await stream(js, "INDICATORS")
        if msg.subject.startswith("indicators.1m.")
    ]
    assert sorted({s.candle for s in snapshots}, key=lambda c: c.ts_open) == g  # each good one, no forged one
