"""Shared fixtures: real PostgreSQL, NATS and Redis (see tests/support/servers.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.servers import NatsProcess, RedisProcess, create_database, drop_database

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("COINPILOT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"real candle data not found at {SHARED_DATA} (set COINPILOT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsProcess) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty database for the session (migrations are applied by the fixtures that need them)."""
    name, url = await create_database()
    yield url
    await drop_database(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis, on a DB index of this session's own: COINPILOT_TEST_REDIS_DB (default 1),
    plus the pytest-xdist worker's number, so parallel workers never share (or flush) one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return f"redis://127.0.0.1:6379/{int(os.environ.get('COINPILOT_TEST_REDIS_DB', '1')) + int(worker)}"


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()
