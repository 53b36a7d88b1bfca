"""Database: sessions commit or roll back, ping never raises, an unreachable server is transient."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from coinpilot.db import Database, JobRun
from coinpilot.errors import TransientError
from tests.support.servers import free_port

pytestmark = pytest.mark.postgres


async def test_ping_is_true_for_a_live_server(db: Database) -> None:
    assert await db.ping() is True


async def test_ping_is_false_and_sessions_raise_transient_when_the_server_is_unreachable() -> None:
    down = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        assert await down.ping() is False
        with pytest.raises(TransientError):
            async with down.session() as session:
                await session.execute(text("SELECT 1"))
    finally:
        await down.dispose()


async def test_a_session_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    boundary = datetime(2025, 1, 2, tzinfo=UTC)
    async with db.session() as session:
        session.add(JobRun(run_id="db-test", job_name="committed", boundary=boundary))
    with pytest.raises(ValueError):
        async with db.session() as session:
            session.add(JobRun(run_id="db-test", job_name="rolled-back", boundary=boundary))
            await session.flush()
            raise ValueError("boom")
    async with db.session() as session:
        rows = (await session.execute(select(JobRun).where(JobRun.run_id == "db-test"))).scalars().all()
    assert [row.job_name for row in rows] == ["committed"]
    assert rows[0].created_at is not None, "created_at has a server default"


async def test_timestamps_come_back_timezone_aware_in_utc(db: Database) -> None:
    async with db.session() as session:
        boundary = await session.scalar(select(JobRun.boundary).where(JobRun.job_name == "committed"))
    assert boundary is not None and boundary.utcoffset() is not None


async def test_a_driver_transaction_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    boundary = datetime(2025, 1, 3, tzinfo=UTC)
    insert = "INSERT INTO job_runs (run_id, job_name, boundary) VALUES ($1, $2, $3)"
    async with db.transaction() as conn:
        await conn.execute(insert, "db-raw", "committed", boundary)
    with pytest.raises(ValueError):
        async with db.transaction() as conn:
            await conn.execute(insert, "db-raw", "rolled-back", boundary)
            raise ValueError("boom")
    async with db.transaction() as conn:
        rows = await conn.fetch("SELECT job_name, boundary FROM job_runs WHERE run_id = 'db-raw'")
    assert [row["job_name"] for row in rows] == ["committed"]
    assert rows[0]["boundary"] == boundary and rows[0]["boundary"].utcoffset() is not None


async def test_a_driver_transaction_on_an_unreachable_server_is_transient() -> None:
    down = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(TransientError):
            async with down.transaction() as conn:
                await conn.execute("SELECT 1")
    finally:
        await down.dispose()


async def test_a_connection_killed_mid_transaction_is_transient_and_never_reused(db: Database) -> None:
    async with db.transaction() as conn:
        victim = await conn.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(TransientError):
        async with db.transaction() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == victim, "the pool reuses it"
            async with db.session() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
            await conn.execute("SELECT 1")
    async with db.transaction() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") != victim
        assert await conn.fetchval("SELECT 1") == 1


async def test_rolled_back_runs_real_statements_and_keeps_nothing(db: Database) -> None:
    boundary = datetime(2025, 1, 3, tzinfo=UTC)
    insert = "INSERT INTO job_runs (run_id, job_name, boundary) VALUES ($1, $2, $3) RETURNING job_name"
    async with db.rolled_back() as conn:
        assert await conn.fetchval(insert, "db-rehearsal", "seen inside", boundary) == "seen inside"
        assert await conn.fetchval("SELECT count(*) FROM job_runs WHERE run_id = 'db-rehearsal'") == 1
    with pytest.raises(ValueError):
        async with db.rolled_back() as conn:
            await conn.execute(insert, "db-rehearsal", "raised", boundary)
            raise ValueError("boom")
    async with db.session() as session:
        rows = (await session.execute(select(JobRun).where(JobRun.run_id == "db-rehearsal"))).all()
    assert rows == []
