"""Alembic environment for CoinPilot.

The database URL comes from (first found): the connection or URL that ``coinpilot.db.upgrade`` put
in ``config.attributes``, ``-x url=...``, ``sqlalchemy.url`` in the ini, env ``COINPILOT_DATABASE_URL``.
Logging is left to the host process (no ``fileConfig``), so running migrations never resets loggers.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from coinpilot.db.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("COINPILOT_DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "no database URL: pass -x url=postgresql+asyncpg://... or set COINPILOT_DATABASE_URL"
        )
    return url


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_with)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    run_with(shared)
else:
    asyncio.run(run_async())
