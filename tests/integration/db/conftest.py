"""A migrated database of this package's own, and a Database over it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coinpilot.db import Database, upgrade
from tests.support.servers import create_database, drop_database


@pytest.fixture(scope="module")
async def migrated_url() -> AsyncIterator[str]:
    name, url = await create_database("cp_db")
    await upgrade(url)
    yield url
    await drop_database(name)


@pytest.fixture(scope="module")
async def db(migrated_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_url)
    yield database
    await database.dispose()
