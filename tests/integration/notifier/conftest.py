"""Notifier integration fixtures: migrated PostgreSQL, fake Discord/n8n/OpenAI servers, a run per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from coinpilot.bus import ensure_streams
from coinpilot.db import Database, upgrade
from tests.integration.notifier.fake_openai import FakeOpenAi
from tests.support.fake_webhooks import FakeDiscord, FakeN8n
from tests.support.servers import NatsProcess

_runs = itertools.count(1)


@pytest.fixture(scope="session")
async def notifier_db(pg_url: str) -> AsyncIterator[Database]:
    await upgrade(pg_url)
    db = Database(pg_url)
    yield db
    await db.dispose()


@pytest.fixture
def run_id() -> str:
    return f"notify-test-{next(_runs)}"


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def n8n() -> AsyncIterator[FakeN8n]:
    server = FakeN8n()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAi]:
    server = FakeOpenAi()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def notifier_nats() -> AsyncIterator[NatsProcess]:
    server = NatsProcess()
    server.start()
    nc = await nats.connect(server.url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    yield server
    server.close()


@pytest.fixture
async def js(notifier_nats: NatsProcess) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(notifier_nats.url)
    yield nc.jetstream()
    await nc.close()
