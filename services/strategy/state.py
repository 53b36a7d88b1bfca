"""The strategy's only SQL and Redis: ``strategy_state`` rows and the two dashboard cache keys.

``strategy_state`` (one row per run and symbol) is the truth: the position as the fills told it,
its high-water mark, the last candle evaluated and the pending order. The pending order id is kept
in ``last_reason`` as ``PENDING:<minute>:<side>`` (the order id without its symbol, 29 characters):
while an order is pending the last reason is by definition "pending", so nothing is lost, and the
order id (``<symbol>:<minute>:<side>``) is rebuilt from it. Redis only mirrors: ``bot:status:<SYM>``
(TTL 300 s) and ``position:<SYM>:hwm``; a Redis failure skips those writes and never blocks a
decision.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from coinpilot.cache import Cache, keys
from coinpilot.clock import ensure_utc, wall_clock_now
from coinpilot.contracts import ExitReason, Regime
from coinpilot.db import Database, TransactionBook
from coinpilot.errors import TransientError
from coinpilot.fill_ledger import RECORD_COLUMNS, RecordedFill, recorded_from_row
from services.strategy import metrics
from services.strategy.core import HoldReason, Position, SymbolState

log = logging.getLogger("coinpilot.strategy")

PENDING_PREFIX = "PENDING:"


def encode_reason(state: SymbolState) -> str | None:
    if state.pending_order_id is not None:
        return PENDING_PREFIX + state.pending_order_id.split(":", 1)[1]
    return state.last_reason


def decode_pending(symbol: str, last_reason: str | None) -> tuple[str | None, str | None]:
    """``(pending order id, last reason)`` from the stored column."""
    if last_reason is not None and last_reason.startswith(PENDING_PREFIX):
        order_id = f"{symbol}:{last_reason[len(PENDING_PREFIX) :]}"
        pending_reason = HoldReason.EXIT_PENDING if order_id.endswith(":sell") else HoldReason.ENTRY_PENDING
        return order_id, pending_reason.value
    return None, last_reason


def to_state(row: Mapping[str, Any]) -> SymbolState:
    """From a ``strategy_state`` row."""
    position = None
    if (
        row["has_position"]
        and row["avg_price"] is not None
        and row["quantity"] is not None
        and row["opened_at"] is not None
    ):
        position = Position(
            position_id=row["position_id"] or "",
            avg_price=row["avg_price"],
            quantity=row["quantity"],
            entry_regime=Regime(row["entry_regime"] or Regime.SIDEWAYS),
            opened_at=ensure_utc(row["opened_at"]),
            high_water_mark=row["high_water_mark"] or row["avg_price"],
            exiting=None if row["exiting"] is None else ExitReason(row["exiting"]),
        )
    pending, reason = decode_pending(row["symbol"], row["last_reason"])
    last = None if row["last_candle_at"] is None else ensure_utc(row["last_candle_at"])
    return SymbolState(row["symbol"], position, pending, last, reason)


Key = tuple[str, str]  # (run id, symbol)

_COLUMNS = (
    "run_id, symbol, has_position, position_id, avg_price, quantity, entry_regime, opened_at, "
    "high_water_mark, last_candle_at, last_reason, updated_at, exiting"
)
_KEYS = "SELECT * FROM unnest($1::varchar[], $2::varchar[])"

# Locks in key order, so two units of work over overlapping symbols never deadlock.
_LOCK = f"""
SELECT {_COLUMNS} FROM strategy_state
WHERE (run_id, symbol) IN ({_KEYS})
ORDER BY run_id, symbol
FOR UPDATE
"""

_CREATE = f"""
INSERT INTO strategy_state (run_id, symbol)
SELECT * FROM ({_KEYS}) AS new_keys (run_id, symbol) ORDER BY run_id, symbol
ON CONFLICT (run_id, symbol) DO NOTHING
"""

_VALUE_COLUMNS = _COLUMNS.split(", ")[2:]
_SAVE = f"""
INSERT INTO strategy_state ({_COLUMNS})
SELECT * FROM unnest(
    $1::varchar[], $2::varchar[], $3::boolean[], $4::varchar[], $5::numeric[], $6::numeric[],
    $7::varchar[], $8::timestamptz[], $9::numeric[], $10::timestamptz[], $11::varchar[],
    $12::timestamptz[], $13::varchar[]
)
ON CONFLICT (run_id, symbol) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_COLUMNS)}
"""


async def lock_states(conn: asyncpg.Connection, keys: Iterable[Key]) -> dict[Key, SymbolState]:
    """The states of ``keys`` (created when new), row-locked until the transaction ends.

    One round trip when every row exists (every candle after a symbol's first); a new symbol
    costs an insert and a second lock.
    """
    ordered = sorted(set(keys))
    columns = [[run_id for run_id, _ in ordered], [symbol for _, symbol in ordered]]
    rows = await conn.fetch(_LOCK, *columns)
    if len(rows) < len(ordered):
        await conn.execute(_CREATE, *columns)
        rows = await conn.fetch(_LOCK, *columns)
    return {(row["run_id"], row["symbol"]): to_state(row) for row in rows}


# A fill's unit of work: the symbol's row locked and, in the same round trip, the executor's
# trading_history row of the fill's order (the ledger the fill must match; NULLs when there is none).
_LOCK_WITH_FILL = f"""
SELECT {", ".join(f"state.{c}" for c in _COLUMNS.split(", "))}, {RECORD_COLUMNS}
FROM strategy_state AS state
LEFT JOIN trading_history AS fill ON fill.run_id = state.run_id AND fill.order_id = $3
WHERE state.run_id = $1 AND state.symbol = $2
FOR UPDATE OF state
"""


async def lock_state_with_fill(
    conn: asyncpg.Connection, run_id: str, symbol: str, order_id: str
) -> tuple[SymbolState, RecordedFill | None]:
    """The symbol's state, row-locked, and the ledger's record of ``order_id`` (one round trip when
    the symbol's row exists, as it does for every fill of an order the strategy signalled)."""
    row = await conn.fetchrow(_LOCK_WITH_FILL, run_id, symbol, order_id)
    if row is None:
        await conn.execute(_CREATE, [run_id], [symbol])
        row = await conn.fetchrow(_LOCK_WITH_FILL, run_id, symbol, order_id)
    return to_state(row), recorded_from_row(row)


async def load_state(conn: asyncpg.Connection, run_id: str, symbol: str) -> SymbolState:
    """The symbol's state, row-locked until the transaction ends (serialises every consumer)."""
    return (await lock_states(conn, [(run_id, symbol)]))[(run_id, symbol)]


def _values(state: SymbolState, now: datetime) -> tuple[object, ...]:
    """The value columns of :data:`_SAVE`, in order."""
    position = state.position
    return (
        position is not None,
        position.position_id if position else None,
        position.avg_price if position else None,
        position.quantity if position else None,
        position.entry_regime.value if position else None,
        position.opened_at if position else None,
        position.high_water_mark if position else None,
        state.last_candle_at,
        encode_reason(state),
        now,
        position.exiting.value if position and position.exiting else None,
    )


async def save_states(
    conn: asyncpg.Connection, states: Iterable[tuple[str, SymbolState]], now: datetime
) -> None:
    """Upsert ``(run id, state)`` rows in one statement."""
    rows = [(run_id, state.symbol, *_values(state, now)) for run_id, state in states]
    if rows:
        await conn.execute(_SAVE, *(list(column) for column in zip(*rows, strict=True)))


async def save_state(conn: asyncpg.Connection, run_id: str, state: SymbolState, now: datetime) -> None:
    await save_states(conn, [(run_id, state)], now)


async def load_all(conn: asyncpg.Connection, run_id: str) -> list[SymbolState]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM strategy_state WHERE run_id = $1", run_id)
    return [to_state(row) for row in rows]


class PgStrategyTx:
    """``handlers.StrategyTx`` on one PostgreSQL transaction (the statements above)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_states(self, keys: Iterable[Key]) -> dict[Key, SymbolState]:
        return await lock_states(self.conn, keys)

    async def lock_state_with_fill(
        self, run_id: str, symbol: str, order_id: str
    ) -> tuple[SymbolState, RecordedFill | None]:
        return await lock_state_with_fill(self.conn, run_id, symbol, order_id)

    async def save_states(self, states: Iterable[tuple[str, SymbolState]]) -> None:
        await save_states(self.conn, states, wall_clock_now())

    async def load_all(self, run_id: str) -> list[SymbolState]:
        return await load_all(self.conn, run_id)


def pg_strategy_book(db: Database) -> TransactionBook[PgStrategyTx]:
    """``handlers.StrategyBook`` on PostgreSQL: each transaction one connection of the pool."""
    return TransactionBook(db, PgStrategyTx)


class Mirror:
    """Best-effort Redis writes of the dashboard keys; after a failure, skips Redis for a while.

    The pause keeps an outage from costing a socket timeout on every candle of every symbol.
    """

    def __init__(self, cache: Cache | None, retry_seconds: float) -> None:
        self.cache = cache
        self.retry_seconds = retry_seconds
        self._down_until = 0.0

    async def hwm(self, run_id: str, symbol: str, position: Position | None) -> None:
        key = keys.position_hwm(symbol, run_id)
        if position is None:
            await self._write("position_hwm", lambda c: c.delete(key))
        else:
            value = format(position.high_water_mark, "f")
            await self._write("position_hwm", lambda c: c.set(key, value))

    async def after_batch(
        self, statuses: Mapping[Key, dict[str, object]], positions: Mapping[Key, Position | None]
    ) -> None:
        """The keys as a run of candles left them (the last status and HWM of each symbol), in one
        pipeline: a mirror only needs the latest values."""
        if not statuses and not positions:
            return

        async def write(cache: Cache) -> None:
            async with cache.client.pipeline(transaction=False) as pipe:
                for (run_id, symbol), payload in statuses.items():
                    pipe.set(
                        keys.bot_status(symbol, run_id), json.dumps(payload), ex=keys.BOT_STATUS_TTL_SECONDS
                    )
                for (run_id, symbol), position in positions.items():
                    key = keys.position_hwm(symbol, run_id)
                    if position is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, format(position.high_water_mark, "f"))
                await pipe.execute()

        await self._write("bot_status+position_hwm", write)

    async def hwms(self, run_id: str, states: Sequence[SymbolState]) -> None:
        for state in states:
            await self.hwm(run_id, state.symbol, state.position)

    async def _write(self, what: str, op: Callable[[Cache], Awaitable[object]]) -> None:
        if self.cache is None or time.monotonic() < self._down_until:
            return
        try:
            await op(self.cache)
        except (TransientError, RedisError) as exc:
            self._down_until = time.monotonic() + self.retry_seconds
            metrics.CACHE_WRITE_FAILURES.labels(what).inc()
            log.warning("redis unavailable: %s not written for %.0f s (%s)", what, self.retry_seconds, exc)
