"""What the indicator's service tests share: a database and a NATS server per module, and a
collector that only records (the recorder runs beside the indicator; nothing here may call Upbit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.js import JetStreamContext

from coinpilot.bus import ensure_streams
from coinpilot.db import Database, upgrade
from tests.support.servers import NatsProcess, create_database, drop_database


@pytest.fixture(scope="module")
async def db() -> AsyncIterator[Database]:
    name, url = await create_database("cp_indicator")
    await upgrade(url)
    database = Database(url)
    yield database
    await database.dispose()
    await drop_database(name)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def js(nats_server: NatsProcess) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.close()


@pytest.fixture
def collector_only_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector runs as the recorder only: nothing here may call Upbit."""
    monkeypatch.setenv("COINPILOT_COLLECTOR_UPBIT_ENABLED", "false")
    monkeypatch.setenv("COINPILOT_UPBIT_BASE_URL", "http://127.0.0.1:9")
