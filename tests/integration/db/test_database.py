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
