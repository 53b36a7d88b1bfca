"""Agent integration fixtures: PostgreSQL with the schema, Redis (own DB index), the fake LLM
server speaking the real Anthropic/OpenAI formats, and a builder for a wired AgentService."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from coinpilot.db import Database, upgrade
from services.agent.app import create_service
from services.agent.core import AgentParams
from services.agent.service import AgentService
from services.agent.settings import AgentSettings
from tests.support.fake_llm import TEST_KEY, FakeLlmServer

_days = itertools.count(1)


@pytest.fixture(scope="session")
async def fake_llm_server() -> AsyncIterator[FakeLlmServer]:
    server = FakeLlmServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fake_llm(fake_llm_server: FakeLlmServer) -> FakeLlmServer:
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture(scope="session")
async def agent_db(pg_url: str) -> AsyncIterator[Database]:
    await upgrade(pg_url)
    db = Database(pg_url)
    yield db
    await db.dispose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def t0() -> datetime:
    """A fresh market week per test: order ids (and so record keys) never collide across tests, and
    no test's ``market_data`` rows fall inside another test's 48-hour context warm."""
    return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(weeks=next(_days))


def agent_settings(server: FakeLlmServer, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "anthropic_api_key": TEST_KEY,
        "anthropic_base_url": server.anthropic_url,
        "openai_api_key": TEST_KEY,
        "openai_base_url": server.openai_url,
        "llm_max_retries": 0,
        "llm_request_timeout_seconds": 5.0,
        "ai_timeout_seconds": 5.0,
        "ai_context_wait_seconds": 0.0,
    }
    values.update(overrides)
    return AgentSettings(**values)


ServiceFactory = Callable[..., AgentService]


@pytest.fixture
async def make_agent(
    agent_db: Database, redis: Redis, fake_llm: FakeLlmServer
) -> AsyncIterator[ServiceFactory]:
    made: list[AgentService] = []

    def make(redis_client: Redis | None = redis, **overrides: Any) -> AgentService:
        service = create_service(
            agent_settings(fake_llm, **overrides),
            AgentParams(),
            agent_db,
            redis_client,
            logging.getLogger("t"),
        )
        made.append(service)
        return service

    yield make
    for service in made:
        await service.close()
