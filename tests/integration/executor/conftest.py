"""Executor integration fixtures: the migrated PostgreSQL, a run id per test, a private NATS, and the
approvals of genuine orders."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from coinpilot.bus import ensure_streams
from coinpilot.db import Database, upgrade
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess

_runs = itertools.count(1)


@pytest.fixture(scope="session")
async def executor_db(pg_url: str) -> AsyncIterator[Database]:
    await upgrade(pg_url)
    db = Database(pg_url)
    yield db
    await db.dispose()


@pytest.fixture
async def approvals(executor_db: Database) -> AsyncIterator[Approvals]:
    """Writes what stands behind a genuine order; puts ``market_data`` back afterwards."""
    recorder = Approvals(executor_db)
    yield recorder
    await recorder.restore()


@pytest.fixture
def run_id() -> str:
    """Every test books into its own accounts: (run_id, currency) is the account key."""
    return f"exec-test-{next(_runs)}"


@pytest.fixture(scope="module")
async def executor_nats() -> AsyncIterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    nc = await nats.connect(server.url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    yield server
    server.close()


@pytest.fixture
async def js(executor_nats: NatsProcess) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(executor_nats.url)
    yield nc.jetstream()
    await nc.close()
