"""The one async engine a process holds, and the transaction-per-unit-of-work session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from coinpilot.errors import PermanentError, TransientError

TxT = TypeVar("TxT")

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 2.0
REHEARSAL_RUN_PREFIX = "rehearsal-"


# asyncpg's own failures a retry may heal: the connection is gone or refused (class 08, an
# InterfaceError such as "connection is closed"), the server is shutting down (class 57), or the
# transaction lost a deadlock or serialization conflict (class 40).
_DRIVER_TRANSIENT = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
)
# The ones after which the connection itself is unusable (the pool must not hand it out again).
_DRIVER_BROKEN = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry may heal: a lost or refused connection, a timeout (the pool's too)."""
    transient = (
        OperationalError,
        InterfaceError,
        OSError,
        TimeoutError,
        PoolTimeoutError,
        *_DRIVER_TRANSIENT,
    )
    if isinstance(exc, transient):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# SQLSTATE classes of statements that can never succeed as sent: 22 data exception (numeric
# overflow, a string too long for its column, invalid text representation, division by zero...)
# and 23 integrity constraint violation (unique, foreign key, not null, check).
PERMANENT_SQLSTATE_CLASSES = {"22": "data exception", "23": "integrity constraint violation"}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error SQLAlchemy wraps (``orig``), and their causes, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend((getattr(e, "orig", None), e.__cause__))


def permanent_reason(exc: BaseException) -> str | None:
    """Why the database can never accept this statement (SQLSTATE class 22 or 23, or the driver
    refusing a parameter, e.g. an int out of range), or None when a retry is not pointless."""
    for e in _causes(exc):
        if isinstance(e, asyncpg.exceptions._base.DataError):  # the driver refused a parameter
            return f"invalid query input: {e}"
        code = getattr(e, "sqlstate", None)
        if isinstance(code, str) and code[:2] in PERMANENT_SQLSTATE_CLASSES:
            return f"SQLSTATE {code} ({PERMANENT_SQLSTATE_CLASSES[code[:2]]}): {type(e).__name__}: {e}"
    return None


@contextmanager
def _classified() -> Iterator[None]:
    """Re-raise what the ladder must know: a statement the database can never accept as
    :class:`PermanentError` (dead-lettered on the first delivery), a lost or refused database as
    :class:`TransientError` (waited out in place). Anything else propagates as it is."""
    try:
        yield
    except (TransientError, PermanentError):
        raise
    except Exception as exc:
        reason = permanent_reason(exc)
        if reason is not None:  # first: the driver's bad-parameter error is an InterfaceError too
            raise PermanentError(f"database refused the data: {reason}") from exc
        if is_transient(exc):
            raise TransientError(f"database unavailable: {exc.__class__.__name__}: {exc}") from exc
        raise


def rehearsal_run_id() -> str:
    """A run id for :meth:`Database.rolled_back` work: no real run's, and unique, so replicas
    rehearsing at the same time never wait on each other's rows."""
    return f"{REHEARSAL_RUN_PREFIX}{uuid.uuid4().hex}"


class Database:
    """An async engine plus sessions that commit or roll back.

    No ``pool_pre_ping``: it costs a round trip per transaction on the hot path. A connection
    that died meanwhile (a database restart) fails its first statement instead; SQLAlchemy then
    discards it (and the pool's other stale connections), the session surfaces
    :class:`TransientError`, and the ladder's NAK retries on a fresh connection.
    """

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, **engine_options)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back when it raises.

        A lost or refused database connection surfaces as :class:`TransientError` (retry later),
        data the database can never accept (SQLSTATE class 22 or 23) as :class:`PermanentError`.
        """
        with _classified():
            async with self._sessions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction on the driver's own connection: for hot paths that write plain SQL.

        Same contract as :meth:`session` (commit when the block ends, roll back when it raises, a
        lost or refused database is :class:`TransientError`, data it can never accept
        :class:`PermanentError`) at about a third of its cost: a
        statement here is one asyncpg round trip, without the ORM's compile and greenlet hops.
        The connection comes from the engine's pool. Values are the driver's: ``numeric`` is
        ``Decimal``, ``timestamptz`` an aware UTC ``datetime``; ``json``/``jsonb`` go through the
        codec SQLAlchemy's dialect installs on its connections (decoded to Python values here):
        cast to ``text`` in SQL where the exact form matters.
        """
        async with self._driver_connection() as raw, raw.transaction():
            yield raw

    @asynccontextmanager
    async def rolled_back(self) -> AsyncIterator[asyncpg.Connection]:
        """Like :meth:`transaction`, but always rolled back: real statements, nothing kept.

        For rehearsing a hot path at start-up. A fresh connection pays each statement's first
        parse and plan, the backend's catalog lookups and the driver's statement preparation on
        first use (an executor's first order took ~7 ms more than the next); a rehearsal moves
        that cost before the first message. Sequences are not transactional: an insert here still
        consumes its identity value (ids are surrogate keys; nothing compares them).
        """
        async with self._driver_connection() as raw:
            tx = raw.transaction()
            await tx.start()
            try:
                yield raw
            finally:
                await tx.rollback()

    @asynccontextmanager
    async def _driver_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection's asyncpg connection; dropped from the pool if it broke."""
        with _classified():
            async with self.engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert isinstance(raw, asyncpg.Connection)
                try:
                    yield raw
                except _DRIVER_BROKEN:
                    await conn.invalidate()
                    raise

    async def ping(self) -> bool:
        """``SELECT 1`` within a short timeout; False on any failure, never raises."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.debug("database ping failed: %s", exc)
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


class TransactionBook(Generic[TxT]):
    """A service's store on PostgreSQL: each :meth:`transaction` is one :meth:`Database.transaction`
    with its connection wrapped in the service's transaction object (its statements)."""

    def __init__(self, db: Database, wrap: Callable[[asyncpg.Connection], TxT]) -> None:
        self.db = db
        self.wrap = wrap

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TxT]:
        async with self.db.transaction() as conn:
            yield self.wrap(conn)
