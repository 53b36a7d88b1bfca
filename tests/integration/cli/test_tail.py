"""`coinpilot tail` prints messages published during the test, readably or as JSON."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import timedelta

import nats
import pytest

from apps.cli.tail import summarize, tail
from coinpilot.bus import Bus, ensure_streams
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import AlertLevel, AlertType, RiskAlert
from coinpilot.settings import CommonSettings
from tests.support.messages import candle

pytestmark = pytest.mark.nats


@pytest.fixture(scope="module")
async def published(nats_url: str):
    """Publish once: the same ids again would be dropped by JetStream's duplicate window."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.purge_stream("CANDLES")
    await js.purge_stream("RISK")
    start = wall_clock_now() - timedelta(seconds=1)
    bus = Bus(js, "test")
    await bus.publish(candle(10, symbol="KRW-BTC", close="95000000"), run_id="live")
    await bus.publish(candle(10, symbol="KRW-ETH", close="4000000"), run_id="replay-7")
    await bus.publish(
        RiskAlert(
            ts_event=candle(10).ts_event,
            type=AlertType.DAILY_LOSS_HALT,
            level=AlertLevel.CRITICAL,
            message="daily loss limit reached",
        ),
        run_id="live",
    )
    yield start
    await nc.close()


async def test_tail_prints_messages_from_a_start_time(nats_url, published) -> None:
    lines: list[str] = []
    shown = await tail(
        CommonSettings(nats_url=nats_url), "candles.>", since=published, count=2, out=lines.append
    )
    assert shown == 2
    assert "candles.1m.KRW-BTC" in lines[0] and "close=95000000" in lines[0]
    assert "candles.1m.KRW-ETH" in lines[1] and "run=replay-7" in lines[1]
    assert lines[0].startswith("2026-01-01 00:11:00")


async def test_tail_filters_by_symbol_and_prints_raw_json(nats_url, published) -> None:
    lines: list[str] = []
    settings = CommonSettings(nats_url=nats_url)
    await tail(
        settings, "candles.>", seq=1, symbol="KRW-ETH", as_json=True, idle_timeout=1.0, out=lines.append
    )
    assert len(lines) == 1
    raw = json.loads(lines[0])
    assert raw["subject"] == "candles.1m.KRW-ETH" and raw["data"]["close"] == "4000000"
    assert raw["headers"]["Coinpilot-Run-Id"] == "replay-7"


def test_the_tail_command_prints_to_the_terminal(nats_url, published) -> None:
    env = {**os.environ, "COINPILOT_NATS_URL": nats_url}
    out = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "tail", "risk.alerts", "--seq", "1", "--count", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "risk.alerts" in out and "type=DAILY_LOSS_HALT" in out and "level=CRITICAL" in out


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"\xff\x00", "<2 bytes, not UTF-8> base64=/wA=", id="not-utf8-as-base64"),
        pytest.param(b"{not json", "<9 bytes, not JSON> text='{not json'", id="not-json-as-text"),
        pytest.param(b"[1, 2]", "<6 bytes, not a JSON object> text='[1, 2]'", id="json-but-no-object"),
    ],
)
def test_summarize_shows_a_body_it_cannot_read(body: bytes, expected: str) -> None:
    headers = {"Coinpilot-Event-Time": "2026-01-01T00:11:00+00:00", "Coinpilot-Run-Id": "r-1"}
    line = summarize("signals.entry.KRW-BTC", body, headers)
    assert line == f"2026-01-01 00:11:00  signals.entry.KRW-BTC  {expected} run=r-1"


UNREADABLE = [
    (b'{"ts_event": "2026-01-01T00:11:00Z", "side": "BUY"}', None),
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00binary", "not UTF-8"),
    (b'{"ts_event": "2026-01-01T00:12:00Z", "side": "SELL"}', None),
]


def test_tail_json_prints_every_message_even_undecodable_ones_as_one_json_line(nats_url) -> None:
    """The poisoned messages are the ones a user tails for: they print as base64, never crash."""

    async def publish() -> int:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_streams(js)
        first = (await js.stream_info("SIGNALS")).state.last_seq + 1
        for i, (body, _) in enumerate(UNREADABLE):
            await js.publish("signals.entry.KRW-XRP", body, headers={"Coinpilot-Run-Id": f"bad-{i}"})
        await nc.close()
        return first

    first = asyncio.run(publish())
    env = {**os.environ, "COINPILOT_NATS_URL": nats_url}
    out = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "tail", "signals.>", "--json", "--seq", str(first),
         "--count", str(len(UNREADABLE))],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == list(range(first, first + len(UNREADABLE)))
    for i, (line, (body, problem)) in enumerate(zip(lines, UNREADABLE, strict=True)):
        assert line["subject"] == "signals.entry.KRW-XRP"
        assert line["headers"]["Coinpilot-Run-Id"] == f"bad-{i}"
        if problem is None:
            assert line["data"] == json.loads(body) and "data_base64" not in line
        else:
            assert line["undecodable"] == problem and "data" not in line
            assert base64.b64decode(line["data_base64"]) == body
