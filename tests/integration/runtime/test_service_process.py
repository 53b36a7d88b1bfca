"""`coinpilot run` as a real process: probes, readiness through a NATS outage, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest

from coinpilot.bus import Bus
from coinpilot.contracts import IndicatorSnapshot
from coinpilot.db import upgrade
from tests.support.messages import candle
from tests.support.servers import free_port, isolated_nats, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def own_nats():
    async with isolated_nats() as server:
        yield server


def start_service(nats_url: str, pg_url: str, port: int, release: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "COINPILOT_NATS_URL": nats_url,
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_REDIS_URL": "",
        "COINPILOT_HTTP_HOST": "127.0.0.1",
        "COINPILOT_HTTP_PORT": str(port),
        "COINPILOT_PULL_BATCH_SIZE": "1",
        "ECHO_RELEASE_FILE": str(release),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", "tests.support.echo_service:build"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def get(port: int, path: str) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return await client.get(f"http://127.0.0.1:{port}{path}")
    except httpx.TransportError:
        return None


async def status(port: int, path: str) -> int | None:
    response = await get(port, path)
    return None if response is None else response.status_code


async def test_a_running_service_serves_probes_and_readiness_follows_nats(own_nats, pg_url, tmp_path) -> None:
    await upgrade(pg_url)
    port = free_port()
    proc = start_service(own_nats.url, pg_url, port, tmp_path / "release")
    try:
        await wait_for(lambda: status(port, "/readyz"), timeout=30)
        assert await status(port, "/healthz") == 200
        assert await status(port, "/readyz") == 200
        metrics = (await get(port, "/metrics")).text
        assert "coinpilot_service_ready" in metrics and "coinpilot_handler_seconds" in metrics

        own_nats.stop()
        assert await wait_for(lambda: _is(status(port, "/readyz"), 503), timeout=30)
        body = (await get(port, "/readyz")).json()
        assert body == {"ready": False, "checks": {"nats": False, "database": True, "consumers": True}}

        own_nats.start()
        assert await wait_for(lambda: _is(status(port, "/readyz"), 200), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def _is(value, expected) -> bool:  # type: ignore[no-untyped-def]
    return (await value) == expected


async def test_sigterm_finishes_the_in_flight_message_and_loses_nothing(own_nats, pg_url, tmp_path) -> None:
    await upgrade(pg_url)
    release = tmp_path / "release"
    port = free_port()
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    bus = Bus(js, "test")
    await bus.publish(candle(0, symbol="KRW-XRP", volume="7"), run_id="live")  # blocks until released
    await bus.publish(candle(1, symbol="KRW-XRP"), run_id="live")
    proc = start_service(own_nats.url, pg_url, port, release)
    try:
        await wait_for(lambda: _is(status(port, "/readyz"), 200), timeout=30)
        info = await wait_for(lambda: _ack_pending(js), timeout=15)
        assert info >= 1  # the blocking message is in flight
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.to_thread(_read_until, proc, "signal received"), timeout=15)
        assert proc.poll() is None  # still finishing the in-flight message
        release.touch()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

    outputs = await js.pull_subscribe("indicators.1m.KRW-XRP", durable="check-out", stream="INDICATORS")
    first = await outputs.fetch(1, timeout=5)
    assert IndicatorSnapshot.from_json(first[0].data).candle.volume == 7
    consumer = await js.consumer_info("CANDLES", "echo-candles")
    # the in-flight message was acked; the other one is either done or still pending: never lost
    assert consumer.num_ack_pending == 0
    assert consumer.num_pending + consumer.delivered.stream_seq >= 2

    proc = start_service(own_nats.url, pg_url, port, release)
    try:
        await wait_for(lambda: _count(js, "indicators.1m.KRW-XRP", 2), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    await nc.close()


def _read_until(proc: subprocess.Popen[bytes], needle: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if needle in line.decode(errors="replace"):
            return
    raise AssertionError(f"process ended without printing {needle!r}")


async def _ack_pending(js) -> int:  # type: ignore[no-untyped-def]
    try:
        return (await js.consumer_info("CANDLES", "echo-candles")).num_ack_pending
    except Exception:
        return 0


async def _count(js, subject: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    info = await js.stream_info("INDICATORS", subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0) >= n


async def test_run_all_hosts_every_service_in_one_process(own_nats, pg_url, redis_url, tmp_path) -> None:
    """`coinpilot run all`: one process, one probe server, every service's durable consumers."""
    from coinpilot.runtime import SERVICES

    await upgrade(pg_url)
    port = free_port()
    env = {
        **os.environ,
        "COINPILOT_NATS_URL": own_nats.url,
        "COINPILOT_DATABASE_URL": pg_url,
        "COINPILOT_REDIS_URL": redis_url,
        "COINPILOT_HTTP_HOST": "127.0.0.1",
        "COINPILOT_HTTP_PORT": str(port),
        "COINPILOT_COLLECTOR_UPBIT_ENABLED": "false",
        "COINPILOT_LLM_MODE_SOURCE": "rules",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", "all"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert await wait_for(lambda: _is(status(port, "/readyz"), 200), timeout=60)
        metrics = (await get(port, "/metrics")).text
        for name in SERVICES:
            assert f'coinpilot_service_ready{{service="{name}"}} 1.0' in metrics
        nc = await nats.connect(own_nats.url)
        js = nc.jetstream()
        durables = set()
        for stream in ("CANDLES", "INDICATORS", "SIGNALS", "ORDERS", "FILLS", "AI", "RISK", "REPORTS"):
            durables |= {c.config.durable_name for c in await js.consumers_info(stream)}
        await nc.close()
        for name in SERVICES:
            assert any(d and d.startswith(f"{name}-") for d in durables), (name, durables)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
