"""The notifier as a service on real NATS + PostgreSQL with local Discord and n8n servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from nats.js import JetStreamContext

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract, DailyReport, DeadLetter, HourlyCandle
from coinpilot.db import Database
from coinpilot.settings import CommonSettings
from services.executor.app import execute_order
from services.executor.core import FillParams
from services.executor.venue import PaperVenue
from tests.support.fake_webhooks import FakeDiscord, FakeN8n, Misbehave
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess, wait_for
from tests.unit.executor.factories import buy_order, sell_order
from tests.unit.notifier.factories import buy_fill

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
DURABLES = ("notifier-fills", "notifier-ai", "notifier-risk", "notifier-reports", "notifier-clock")


@pytest.fixture
async def notifier(
    js: JetStreamContext,
    notifier_nats: NatsProcess,
    pg_url: str,
    notifier_db: Database,
    discord: FakeDiscord,
    n8n: FakeN8n,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[ServiceHost]:
    """A notifier service on a migrated database (``notifier_db`` applies the schema)."""
    for stream in ("FILLS", "AI", "RISK", "REPORTS", "CANDLES", "DLQ"):
        await js.purge_stream(stream)
    env = {
        "COINPILOT_DISCORD_WEBHOOK_URL": discord.webhook_url,
        "COINPILOT_N8N_URL": n8n.base_url,
        "COINPILOT_N8N_WEBHOOK_SECRET": n8n.secret,
        "COINPILOT_NOTIFIER_DELIVER_REPLAYS": "true",
        "COINPILOT_NOTIFIER_BACKOFF_BASE_SECONDS": "0.01",
        "COINPILOT_NOTIFIER_REQUEST_TIMEOUT_SECONDS": "0.3",
        "COINPILOT_NOTIFIER_REPORT_CHECK_SECONDS": "0.05",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COINPILOT_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = CommonSettings(
        nats_url=notifier_nats.url, database_url=pg_url, redis_url=None, ack_wait_seconds=5.0, http_port=0
    )
    host = ServiceHost(["notifier"], settings, serve_http=False)
    await host.start()
    yield host
    await host.stop()


async def publish_copy(js: JetStreamContext, msg: Contract, run_id: str, copy: int) -> None:
    """Another Nats-Msg-Id, so JetStream stores it again: a redelivery the notifier must absorb."""
    headers = h.build_headers(
        msg_id=f"{msg.msg_id()}#{copy}",
        run_id=run_id,
        trace_id="t",
        ts_event=msg.ts_event,
        published_at=wall_clock_now(),
        schema=f"{type(msg).__name__}/v1",
    )
    await Bus(js, "test").publish_raw(msg.subject(), msg.to_json(), headers)


async def drained(js: JetStreamContext) -> bool:
    for durable, stream in zip(DURABLES, ("FILLS", "AI", "RISK", "REPORTS", "CANDLES"), strict=True):
        info = await js.consumer_info(stream, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def stored(js: JetStreamContext, stream: str) -> list[bytes]:
    info = await js.stream_info(stream)
    return [
        (await js.get_msg(stream, seq)).data for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def test_a_fill_delivered_twice_is_posted_once_to_each_sink(notifier, js, discord, n8n, run_id) -> None:
    fill = buy_fill()
    await publish_copy(js, fill, run_id, 1)
    await publish_copy(js, fill, run_id, 2)
    await wait_for(lambda: len(discord.received) >= 1 and len(n8n.received) >= 1, timeout=10)
    await wait_for(lambda: drained(js), timeout=10)
    assert [e["title"] for e in discord.embeds()] == ["Trade Executed: BUY"]
    assert [(r.path, r.body["order_id"]) for r in n8n.received] == [("/webhook/trade", fill.order_id)]


async def test_a_sink_down_longer_than_the_retries_ends_in_the_dlq_and_nothing_is_lost(
    notifier, js, discord, n8n, run_id
) -> None:
    discord.always = Misbehave.error(503)
    fill = buy_fill()
    await Bus(js, "test").publish(fill, run_id=run_id)
    letters = await wait_for(lambda: stored(js, "DLQ"), timeout=10)
    await wait_for(lambda: drained(js), timeout=10)  # acked: both sinks reached a terminal state
    (letter,) = [DeadLetter.from_json(b) for b in letters]
    assert (letter.service, letter.subject_original) == ("notifier", "fills.KRW-BTC")
    assert letter.reason.startswith("notifier: discord after 3 attempt(s): gave up: HTTP 503")
    assert letter.body.encode() == fill.to_json()  # the event itself, ready to re-publish
    assert letter.stream == "FILLS" and letter.stream_sequence is not None  # redrivable from there
    assert len(discord.received) == 3
    assert [r.body["order_id"] for r in n8n.received] == [fill.order_id]


async def test_the_daily_report_fires_at_22_kst_event_time_and_reaches_every_sink(
    notifier, js, notifier_db: Database, discord, n8n, run_id
) -> None:
    venue = PaperVenue(FillParams(fee_rate=Decimal(0)))
    approvals = Approvals(notifier_db)
    bought = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    for order in (
        buy_order("100000000", "1000000", at=bought),
        sell_order(
            "101000000",
            opened_by=f"KRW-BTC:{bought:%Y-%m-%dT%H:%MZ}:buy",
            quantity="0.01",
            avg_price="100000000",
            high_water_mark="101000000",
            at=bought + timedelta(hours=3),
            opened_at=bought,
        ),
    ):
        await approvals.approve(run_id, order)  # genuine: approved, quoted at its recorded close
        await execute_order(
            notifier_db, venue, order, run_id=run_id, trace_id=None, initial_balance=Decimal(10**7)
        )
    await approvals.restore()
    hour = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    price = Decimal("101000000")
    candle = HourlyCandle(
        symbol="KRW-BTC",
        ts_open=hour,
        ts_event=hour + timedelta(hours=1),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(3),
        minute_count=60,
    )
    await Bus(js, "test").publish(candle, run_id=run_id)

    (body,) = await wait_for(lambda: stored(js, "REPORTS"), timeout=10)
    report = DailyReport.from_json(body)
    assert (report.report_date.isoformat(), report.trades, report.sell_trades, report.total_pnl) == (
        "2026-03-02",
        2,
        1,
        Decimal("10000"),
    )
    await wait_for(lambda: discord.embeds() and n8n.received, timeout=10)
    (embed,) = discord.embeds()
    assert embed["title"] == "📅 CoinPilot Daily Report (2026-03-02)"
    assert [(f["name"], f["value"]) for f in embed["fields"][:4]] == [
        ("💰 Total PnL", "10,000 KRW"),
        ("📊 Trades", "2건"),
        ("🎯 Win Rate", "100.0%"),
        ("📉 MDD", "0.00%"),
    ]
    (request,) = n8n.received
    assert request.path == "/webhook/daily-report" and request.body["pnl"] == "10,000 KRW"


def hourly(ts_event: datetime) -> HourlyCandle:
    price = Decimal("101000000")
    return HourlyCandle(
        symbol="KRW-BTC",
        ts_open=ts_event - timedelta(hours=1),
        ts_event=ts_event,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(3),
        minute_count=60,
    )


async def test_event_time_jumping_days_publishes_every_missed_report_in_order_once(
    notifier, js, discord, run_id
) -> None:
    """A replay at speed: the clock's next hour is three days on; each day passed gets its report."""
    bus = Bus(js, "test")
    await bus.publish(hourly(datetime(2026, 3, 2, 12, 0, tzinfo=UTC)), run_id=run_id)
    await bus.publish(hourly(datetime(2026, 3, 5, 14, 0, tzinfo=UTC)), run_id=run_id)
    await publish_copy(js, hourly(datetime(2026, 3, 5, 14, 0, tzinfo=UTC)), run_id, 1)  # a redelivery
    await wait_for(lambda: len(discord.embeds()) >= 4, timeout=20)
    await wait_for(lambda: drained(js), timeout=10)
    reports = [DailyReport.from_json(b) for b in await stored(js, "REPORTS")]
    assert [r.report_date.isoformat() for r in reports] == [
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
    ]
    assert [e["title"] for e in discord.embeds()] == [
        f"📅 CoinPilot Daily Report (2026-03-0{d})" for d in (2, 3, 4, 5)
    ]
