"""`coinpilot replay` rides out NATS restarts: every candle stored once, in order, and it finishes.

Each test runs its own nats-server, stopped (SIGTERM) or killed (SIGKILL) and started again on the
same port and data while the replay is publishing or waiting for a drain.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from coinpilot.bus import ensure_streams
from coinpilot.bus.connect import connect
from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.settings import CommonSettings
from tests.support.servers import NatsProcess, wait_for

pytestmark = pytest.mark.nats

T0 = datetime(2026, 2, 1, tzinfo=UTC)
SYMBOLS = ("KRW-BTC", "KRW-ETH")
OUTAGE_LOGGED = "NATS unavailable"


def write_candles(path: Path, minutes: int) -> list[MinuteCandle]:
    """A candle file of ``minutes`` minutes for two markets; returns them in replay order."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["symbol", "ts", "open", "high", "low", "close", "volume"])
        for minute in range(minutes):
            ts = int((T0 + timedelta(minutes=minute)).timestamp() * 1000)
            for i, symbol in enumerate(SYMBOLS):
                price = Decimal(1_000_000 * (i + 1) + minute * 100)
                out.writerow([symbol, ts, price, price + 50, price - 50, price + 10, "1.5"])
    return load_candles([path])


async def stored_candles(js: JetStreamContext) -> list[tuple[str, MinuteCandle]]:
    info = await js.stream_info("CANDLES")
    return [
        (msg.subject, MinuteCandle.from_json(msg.data))
        for msg in [await js.get_msg("CANDLES", seq) for seq in range(1, info.state.last_seq + 1)]
    ]


def in_replay_order(candles: list[MinuteCandle]) -> list[tuple[str, MinuteCandle]]:
    return [(c.subject(), c) for c in sorted(candles, key=lambda c: (c.ts_open, c.symbol))]


def ensure_running(server: NatsProcess) -> None:
    """A failed test may leave the server down; the connections close cleanly only when it is up."""
    if server.proc is None:
        server.start()


@pytest.fixture
async def server() -> AsyncIterator[NatsProcess]:
    process = NatsProcess()
    process.start()
    yield process
    process.close()


@pytest.fixture
async def js(server: NatsProcess) -> AsyncIterator[JetStreamContext]:
    """The test's own connection, which reconnects through the restarts like the replay's."""
    nc: Client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    stream = nc.jetstream()
    await ensure_streams(stream)
    yield stream
    await nc.close()


class Pipeline:
    """A durable consumer standing in for the services: acks each candle, except that it holds
    the ones it is told to until released, so the replay is waiting for a drain when NATS goes."""

    def __init__(self, js: JetStreamContext, hold: set[int]) -> None:
        self._js = js
        self._hold = hold
        self.holding: asyncio.Queue[int] = asyncio.Queue()
        self.release = asyncio.Event()

    async def run(self) -> None:
        sub = await self._js.pull_subscribe(
            "candles.1m.>", durable="test-pipeline", stream="CANDLES", config=ConsumerConfig(ack_wait=2)
        )
        while True:
            try:
                (msg,) = await sub.fetch(1, timeout=0.5)
                seq = msg.metadata.sequence.stream
                if seq in self._hold:
                    self._hold.discard(seq)
                    self.release.clear()
                    self.holding.put_nowait(seq)
                    await self.release.wait()
                await msg.ack()
            except (TimeoutError, nats.errors.Error):
                continue  # nothing yet, or NATS away: ask again (an unacked candle comes back)


async def test_the_replay_command_rides_out_a_stop_and_a_kill_of_nats_mid_lockstep(
    server: NatsProcess, js: JetStreamContext, tmp_path: Path
) -> None:
    candles = write_candles(tmp_path / "candles.csv", minutes=30)
    pipeline = Pipeline(js, hold={20, 41})
    consumer = asyncio.create_task(pipeline.run())
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "apps.cli.main", "replay", "--source", "file"),
        *("--path", str(tmp_path / "candles.csv"), "--target", server.url, "--run-id", "restart-1"),
        *("--pace", "lockstep", "--drain-timeout", "60", "--outage-timeout", "60"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    errors: list[str] = []

    async def read_stderr() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            errors.append(line.decode())

    reader = asyncio.create_task(read_stderr())
    try:
        for outage, take_down in enumerate((server.stop, server.kill), start=1):
            await wait_for(lambda: pipeline.holding.qsize() or proc.returncode is not None, timeout=60)
            assert proc.returncode is None, "".join(errors)  # it waits for a drain when NATS goes
            pipeline.holding.get_nowait()
            take_down()
            await wait_for(
                lambda n=outage: sum(OUTAGE_LOGGED in e for e in errors) >= n or proc.returncode is not None,
                timeout=30,
            )
            server.start()
            pipeline.release.set()
        assert await asyncio.wait_for(proc.wait(), timeout=120) == 0, "".join(errors)
        await reader
    finally:
        consumer.cancel()
        ensure_running(server)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    assert f"published {len(candles)} candles over 30 timestamps" in (await proc.stdout.read()).decode()
    assert await stored_candles(js) == in_replay_order(candles)


@pytest.mark.parametrize("pace", ["lockstep", "max"])
async def test_a_publish_made_while_nats_is_down_is_retried_and_stored_once(
    server: NatsProcess, js: JetStreamContext, tmp_path: Path, pace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first attempt waits in the client's buffer and reaches the server when it is back, but
    its ack is lost (timed out); the retry carries the same Nats-Msg-Id, so JetStream keeps one."""
    candles = write_candles(tmp_path / "candles.csv", minutes=150)  # pace max: two windows of 256
    nc = await connect(CommonSettings(nats_url=server.url), "coinpilot-replay")
    caplog.set_level(logging.WARNING, logger="coinpilot.replay")
    server.stop()
    replay = asyncio.create_task(
        replay_candles(nc.jetstream(), candles, run_id="restart-2", pace=parse_pace(pace), outage_timeout=60)
    )
    try:
        await wait_for(lambda: OUTAGE_LOGGED in caplog.text or replay.done(), timeout=30)
        server.start()
        result = await asyncio.wait_for(replay, timeout=120)
    finally:
        replay.cancel()
        ensure_running(server)
        await nc.close()
    assert result.candles == len(candles)
    assert await stored_candles(js) == in_replay_order(candles)
