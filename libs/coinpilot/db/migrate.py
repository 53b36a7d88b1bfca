"""Run the Alembic chain of ``coinpilot/db/migrations`` from code, independent of the working directory.

The async engine's ``run_sync`` hands Alembic a live connection (the Alembic cookbook's
"connection sharing" pattern), so migrations run in the caller's event loop and in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"


def alembic_config(url: str | None = None, x_arguments: dict[str, str] | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations; ``x_arguments`` act like ``-x k=v``."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    config.attributes["x_arguments"] = dict(x_arguments or {})
    return config


async def upgrade(url: str, revision: str = "head", *, x_arguments: dict[str, str] | None = None) -> None:
    """Upgrade the database at ``url`` (``postgresql+asyncpg://...``) to ``revision``."""
    config = alembic_config(url, x_arguments)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    await _with_connection(url, run)


async def downgrade(url: str, revision: str = "base", *, x_arguments: dict[str, str] | None = None) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``base`` drops every table)."""
    config = alembic_config(url, x_arguments)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    await _with_connection(url, run)


async def current_revision(url: str) -> str | None:
    """The revision the database is at, ``None`` when no migration was ever applied."""
    result: list[str | None] = []

    def read(connection: Connection) -> None:
        result.append(MigrationContext.configure(connection).get_current_revision())

    await _with_connection(url, read)
    return result[0]


async def _with_connection(url: str, fn: Callable[[Connection], None]) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(fn)
    finally:
        await engine.dispose()
