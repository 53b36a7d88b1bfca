"""Start-up rehearsals on real PostgreSQL: the hot path's statements prepared, no row kept.

The executor and risk rehearse their message paths in ``on_start`` (``Database.rolled_back``), so
the first order and the first signal of a fresh process find their statements prepared. Risk also
loads its GARCH library there, before its consumers start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from coinpilot.db import Database, upgrade
from coinpilot.db.inbox import _CLAIM
from coinpilot.runtime import Runtime, ServiceDefinition
from services.executor import app as executor_app
from services.executor import state as executor_state
from services.risk import app as risk_app
from services.risk import state as risk_state
from tests.support.rehearsal import prepared_statements, rehearsal_rows, runtime_on
from tests.support.servers import free_port

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Rehearsed:
    service: str
    build: Callable[[Runtime], ServiceDefinition]
    statements: tuple[str, ...]
    tables: tuple[str, ...]
    warning: str


CASES = (
    Rehearsed(
        "executor",
        executor_app.build,
        (
            executor_state._LOCK_ACCOUNT,
            executor_state._OPEN_ACCOUNT,
            executor_state._READ_ORDER,
            executor_state._BOOK_FILL,
            _CLAIM,
        ),
        ("account_state", "positions", "trading_history", "inbox", "order_proposals", "agent_decisions"),
        "order rehearsal failed",
    ),
    Rehearsed(
        "risk",
        risk_app.build,
        (
            _CLAIM,
            risk_state._LOCK_STATE,
            risk_state._CREATE_STATE,
            risk_state._LOCK_DAY,
            risk_state._READ_LEDGER,
            risk_state._SAVE_STATE,
            risk_state._WRITE_AUDITS,
        ),
        ("risk_state", "daily_risk_state", "risk_audit", "inbox"),
        "signal rehearsal failed",
    ),
)


@pytest.fixture(scope="module")
async def migrated(pg_url: str) -> str:
    await upgrade(pg_url)
    return pg_url


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.service)
async def test_the_start_hook_prepares_every_statement_of_the_path_and_keeps_no_row(
    case: Rehearsed, migrated: str
) -> None:
    db = Database(migrated, pool_size=1, max_overflow=0)
    try:
        rt = runtime_on(db, case.service)
        on_start = case.build(rt).on_start
        assert on_start is not None
        assert not set(case.statements) & await prepared_statements(db), "a fresh connection"
        await on_start(rt)
        prepared = await prepared_statements(db)
        rows = await rehearsal_rows(db, case.tables)
    finally:
        await db.dispose()
    missing = [sql.strip().split("\n")[0] for sql in case.statements if sql not in prepared]
    assert not missing, f"not prepared by the rehearsal: {missing}"
    assert rows == dict.fromkeys(case.tables, 0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.service)
async def test_a_rehearsal_that_cannot_reach_the_database_only_logs(
    case: Rehearsed, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        rt = runtime_on(db, case.service)
        on_start = case.build(rt).on_start
        assert on_start is not None
        with caplog.at_level(logging.WARNING, logger=rt.log.name):
            await on_start(rt)
    finally:
        await db.dispose()
    assert case.warning in caplog.text


# A fresh interpreter: in the test process another test may have imported arch already.
_RISK_START = """
import asyncio, sys
from coinpilot.db import Database
from services.risk import app
from tests.support.rehearsal import runtime_on

async def main(url):
    db = Database(url, pool_size=1, max_overflow=0)
    rt = runtime_on(db, "risk")
    definition = app.build(rt)
    loaded_by_build = "arch" in sys.modules
    await definition.on_start(rt)
    await db.dispose()
    print(loaded_by_build, "arch" in sys.modules)

asyncio.run(main(sys.argv[1]))
"""


async def test_risk_loads_the_garch_library_before_its_consumers_start(migrated: str) -> None:
    """Left to the first refit, the import (~1.3 s) would run in the fit's thread while the
    handlers run, slowing every one of them for its duration (see ``load_garch``)."""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _RISK_START, migrated], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
