"""`coinpilot tail` prints messages published during the test, readably or as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import nats
import pytest

from coinpilot.bus import Bus, ensure_streams
from coinpilot.cli.tail import summarize, tail
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
        [sys.executable, "-m", "coinpilot.cli.main", "tail", "risk.alerts", "--seq", "1", "--count", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "risk.alerts" in out and "type=DAILY_LOSS_HALT" in out and "level=CRITICAL" in out


def test_summarize_survives_a_body_that_is_not_json() -> None:
    assert "not JSON" in summarize("signals.entry.KRW-BTC", b"\xff\x00", {})
