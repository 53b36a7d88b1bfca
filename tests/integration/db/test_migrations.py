"""The Alembic chain: up, down, up again on a fresh database, and its schema equals the models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from coinpilot.db import TABLES, Base, current_revision, downgrade, upgrade
from tests.support.servers import create_database, drop_database

pytestmark = pytest.mark.postgres

HEAD = "0006"
EXPECTED_TABLES = {
    "market_data",
    "trading_history",
    "positions",
    "account_state",
    "daily_risk_state",
    "risk_state",
    "risk_audit",
    "agent_decisions",
    "regime_history",
    "llm_usage_events",
    "llm_call_records",
    "notification_deliveries",
    "notification_sent",
    "strategy_state",
    "job_runs",
    "inbox",
    "order_proposals",
    "venue_orders",
    "trading_halts",
    "reconciliations",
}


@pytest.fixture
async def fresh_url() -> AsyncIterator[str]:
    name, url = await create_database("cp_mig")
    yield url
    await drop_database(name)


async def public_tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def schema_differences(url: str) -> list[object]:
    def compare(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


def test_the_models_are_exactly_the_tables_of_the_brief() -> None:
    assert {model.__tablename__ for model in TABLES} == EXPECTED_TABLES
    assert set(Base.metadata.tables) == EXPECTED_TABLES


async def test_upgrade_creates_every_table_at_head(fresh_url: str) -> None:
    assert await current_revision(fresh_url) is None
    await upgrade(fresh_url)
    assert await current_revision(fresh_url) == HEAD
    assert await public_tables(fresh_url) == EXPECTED_TABLES | {"alembic_version"}


async def test_the_migrated_schema_equals_the_models_with_no_autogenerate_diff(fresh_url: str) -> None:
    await upgrade(fresh_url)
    assert await schema_differences(fresh_url) == []


async def test_downgrade_to_base_leaves_only_alembic_version_and_upgrade_works_again(fresh_url: str) -> None:
    await upgrade(fresh_url)
    await downgrade(fresh_url)
    assert await current_revision(fresh_url) is None
    assert await public_tables(fresh_url) == {"alembic_version"}
    await upgrade(fresh_url)
    assert await current_revision(fresh_url) == HEAD
    assert await schema_differences(fresh_url) == []


async def hypertable_state(url: str) -> tuple[bool, bool, bool]:
    """(timescaledb available, installed, market_data is a hypertable)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        installed = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        hyper = installed and await conn.fetchval(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'market_data'"
        )
    finally:
        await conn.close()
    return available is not None, installed is not None, bool(hyper)


async def test_the_timescale_step_converts_market_data_only_where_the_extension_exists(
    fresh_url: str,
) -> None:
    """On plain PostgreSQL (this machine) 0002 is a no-op; with TimescaleDB it makes a hypertable.
    Either way 0002 -> 0001 leaves the plain table of 0001 with its rows."""
    await upgrade(fresh_url, "0001")
    await upgrade(fresh_url, "0002", x_arguments={"market_data_retention_days": "30"})
    available, installed, hyper = await hypertable_state(fresh_url)
    assert (installed, hyper) == (available, available)
    await downgrade(fresh_url, "0001")
    assert await current_revision(fresh_url) == "0001"
    assert (await hypertable_state(fresh_url))[2] is False
    await upgrade(fresh_url)
    assert await schema_differences(fresh_url) == [], "0002 changes storage only, never the columns"
