"""The risk service's only SQL and Redis.

PostgreSQL (the truth), in plain SQL on the driver's connection (``Database.transaction()``):
``risk_state`` (loss streak, cooldown, pending BUYs; survives the day), ``daily_risk_state`` (one
row per run and trading day), ``risk_audit`` (idempotent on run, order and violation);
``account_state``, ``positions`` and ``trading_history`` are the executor's, read here only (a fill
must match its ``trading_history`` row), as is ``market_data`` (an entry's recorded close).

Redis (rebuildable; an outage never changes a decision, see :class:`RiskCache`). Missing keys:
volatility state -> multiplier 1.0; hourly closes -> no refit until the window refills; reference
equity -> computed from the ledger (balance + exposure) and kept; price -> the position's average
price (§4.4). Redis down: prices, volatility states and reference equities come from an in-memory
mirror of what risk read and wrote; what the mirror does not know, and the writes a later decision
depends on (volatility state, hourly closes), wait (``TransientError``, retried in place). After a
failure Redis is skipped for ``retry_seconds`` so an outage costs one timeout, not one per message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import asyncpg
from redis.exceptions import RedisError

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import CACHE_FALLBACKS, Cache, keys
from coinpilot.clock import ensure_utc, trading_day, wall_clock_now
from coinpilot.contracts import OrderApproved, OrderProposed
from coinpilot.db import Database, TransactionBook, claim_on
from coinpilot.db.market import load_hourly_candles
from coinpilot.errors import TransientError
from coinpilot.fill_ledger import RECORD_COLUMNS, RecordedFill, recorded_from_row
from coinpilot.kill_switch import Halt
from services.risk import metrics
from services.risk.core import AuditEntry, DailyState, Holding, LedgerRows, VolatilityReading
from services.risk.core import RiskState as CoreState
from services.risk.params import RiskParams
from services.risk.stores import PriceMemory

log = logging.getLogger("coinpilot.risk")
T = TypeVar("T")


def hourly_closes_key(symbol: str, run_id: str) -> str:
    """Risk's GARCH window: hourly closes of ``symbol`` (score = hour start, epoch seconds)."""
    return f"{keys.namespace(run_id)}coinpilot:hourly_closes:{symbol}"


# -- PostgreSQL ---------------------------------------------------------------------------------
#
# Plain SQL on the driver's connection (``Database.transaction()``). An entry signal costs, between
# BEGIN and COMMIT: the inbox claim, ``_LOCK_STATE``, ``_LOCK_DAY``, ``_READ_LEDGER``,
# ``_SAVE_STATE`` and, when a check wrote any, ``_WRITE_AUDITS``. The day is a statement of its own,
# after the lock: under READ COMMITTED a statement sees what was committed when it started, so only
# a statement that starts once the lock is held sees the day the previous holder saved.

# pending_orders as text, decoded here: the same whatever jsonb codec the connection carries.
_STATE_COLUMNS = "consecutive_losses, cooldown_until, pending_orders::text, last_event_at"

_LOCK_STATE = f"""
SELECT {_STATE_COLUMNS}
FROM risk_state
WHERE run_id = $1
FOR UPDATE
"""

# First use of a run: creates the row, or (another replica created it meanwhile) waits for that one
# and changes nothing in it; either way the row comes back locked until the transaction ends.
_CREATE_STATE = f"""
INSERT INTO risk_state (run_id) VALUES ($1)
ON CONFLICT (run_id) DO UPDATE SET run_id = EXCLUDED.run_id
RETURNING {_STATE_COLUMNS}
"""

# A fill's lock: the same row, and the executor's trading_history row of the fill's order (NULLs
# when there is none), which the fill must match before it counts.
_LOCK_STATE_WITH_FILL = f"""
SELECT state.consecutive_losses, state.cooldown_until, state.pending_orders::text AS pending_orders,
       state.last_event_at, {RECORD_COLUMNS}
FROM risk_state AS state
LEFT JOIN trading_history AS fill ON fill.run_id = state.run_id AND fill.order_id = $2
WHERE state.run_id = $1
FOR UPDATE OF state
"""

_LOCK_DAY = """
SELECT date, total_pnl, buy_count, sell_count, trade_count, is_trading_halted
FROM daily_risk_state
WHERE run_id = $1
ORDER BY date DESC
LIMIT 1
FOR UPDATE
"""

# One row per held position of any currency (at least one row), each with the run's balance in
# $2 (NULL when the executor has not opened the account yet), the close market_data recorded
# for the signal's symbol $3 and minute $4 (NULL when none is, or when $3 is NULL) and the run's
# kill switch (``coinpilot.kill_switch``: NULLs when it is off).
_READ_LEDGER = """
SELECT account.balance, position.symbol, position.quantity, position.avg_price, position.currency,
       (SELECT close_price FROM market_data
        WHERE symbol = $3 AND interval = '1m' AND timestamp = $4) AS recorded_close,
       halt.source AS halt_source, halt.reason AS halt_reason, halt.halted_at
FROM (VALUES (true)) AS one
LEFT JOIN account_state AS account ON account.run_id = $1 AND account.currency = $2
LEFT JOIN positions AS position ON position.run_id = $1 AND position.quantity > 0 AND NOT position.is_dust
LEFT JOIN LATERAL (
    SELECT source, reason, halted_at FROM trading_halts
    WHERE run_id = $1 AND cleared_at IS NULL ORDER BY halted_at LIMIT 1
) AS halt ON true
"""

# Both rows in one statement, and the order the step approved (``order_proposals``, $13..$19, all
# NULL when it approved none): the executor fills only an order recorded here. daily_risk_state
# mirrors the streak and the cooldown for readers of the original table; the truth is risk_state
# (it survives the day). A BUY proposed again (redelivered signal, first publish lost) keeps the
# larger of the two sized amounts, so whichever of them reached the agent is within the record.
_SAVE_STATE = """
WITH approval AS (
    INSERT INTO order_proposals
        (run_id, order_id, symbol, side, amount, reference_price, needs_confirmation, ts_event)
    SELECT $1, $13::varchar, $14::varchar, $15::varchar, $16::numeric, $17::numeric, $18::boolean,
           $19::timestamptz
    WHERE $13::varchar IS NOT NULL
    ON CONFLICT (run_id, order_id) DO UPDATE SET
        amount = GREATEST(order_proposals.amount, EXCLUDED.amount)
),
persistent AS (
    INSERT INTO risk_state
        (run_id, consecutive_losses, cooldown_until, pending_orders, last_event_at, updated_at)
    VALUES ($1, $2, $3, $4::text::jsonb, $5, $6)
    ON CONFLICT (run_id) DO UPDATE SET
        consecutive_losses = EXCLUDED.consecutive_losses,
        cooldown_until = EXCLUDED.cooldown_until,
        pending_orders = EXCLUDED.pending_orders,
        last_event_at = EXCLUDED.last_event_at,
        updated_at = EXCLUDED.updated_at
)
INSERT INTO daily_risk_state
    (run_id, date, total_pnl, buy_count, sell_count, trade_count, is_trading_halted,
     consecutive_losses, cooldown_until, updated_at)
VALUES ($1, $7, $8, $9, $10, $11, $12, $2, $3, $6)
ON CONFLICT (run_id, date) DO UPDATE SET
    total_pnl = EXCLUDED.total_pnl,
    buy_count = EXCLUDED.buy_count,
    sell_count = EXCLUDED.sell_count,
    trade_count = EXCLUDED.trade_count,
    is_trading_halted = EXCLUDED.is_trading_halted,
    consecutive_losses = EXCLUDED.consecutive_losses,
    cooldown_until = EXCLUDED.cooldown_until,
    updated_at = EXCLUDED.updated_at
"""

# All audits of a step in one statement, inserted in their order; a repeated one adds nothing.
_WRITE_AUDITS = """
INSERT INTO risk_audit (run_id, violation_type, description, symbol, order_id, ts_event)
SELECT $1, violation_type, description, symbol, order_id, ts_event
FROM unnest($2::varchar[], $3::text[], $4::varchar[], $5::varchar[], $6::timestamptz[])
     WITH ORDINALITY AS audit(violation_type, description, symbol, order_id, ts_event, seq)
ORDER BY seq
ON CONFLICT ON CONSTRAINT uq_risk_audit_run_order_violation DO NOTHING
"""


async def load_risk_state(
    conn: asyncpg.Connection, run_id: str, now: datetime, params: RiskParams
) -> CoreState:
    """The run's risk state, row-locked until the transaction ends; today's row if there is one."""
    row = await conn.fetchrow(_LOCK_STATE, run_id)
    if row is None:
        row = await conn.fetchrow(_CREATE_STATE, run_id)
    return await _with_day(conn, row, run_id, now, params)


async def load_risk_state_with_fill(
    conn: asyncpg.Connection, run_id: str, order_id: str, now: datetime, params: RiskParams
) -> tuple[CoreState, RecordedFill | None]:
    """:func:`load_risk_state` for a fill, with the ledger's record of its order read in the
    lock's round trip (a run's first use, rare for a fill, adds the create and a second lock)."""
    row = await conn.fetchrow(_LOCK_STATE_WITH_FILL, run_id, order_id)
    if row is None:
        await conn.fetchrow(_CREATE_STATE, run_id)
        row = await conn.fetchrow(_LOCK_STATE_WITH_FILL, run_id, order_id)
    return await _with_day(conn, row, run_id, now, params), recorded_from_row(row)


async def _with_day(
    conn: asyncpg.Connection, row: Mapping[str, Any], run_id: str, now: datetime, params: RiskParams
) -> CoreState:
    """The locked ``risk_state`` row with the run's latest day (locked by a statement of its own)."""
    daily_row = await conn.fetchrow(_LOCK_DAY, run_id)
    if daily_row is None:
        daily = DailyState(trading_day(now, params.day_boundary))
    else:
        daily = DailyState(
            day=daily_row["date"],
            total_pnl=daily_row["total_pnl"],
            buy_count=daily_row["buy_count"],
            sell_count=daily_row["sell_count"],
            trade_count=daily_row["trade_count"],
            is_trading_halted=daily_row["is_trading_halted"],
        )
    cooldown_until, last_event_at = row["cooldown_until"], row["last_event_at"]
    return CoreState(
        daily=daily,
        consecutive_losses=row["consecutive_losses"],
        cooldown_until=None if cooldown_until is None else ensure_utc(cooldown_until),
        pending_orders=dict(json.loads(row["pending_orders"]) or {}),
        last_event_at=None if last_event_at is None else ensure_utc(last_event_at),
    )


def approval_of(out: Iterable[object]) -> tuple[Any, ...]:
    """The ``order_proposals`` values of the order a step approved ($13..$19), or all NULL.

    An ``OrderProposed`` BUY goes to the agent, which must confirm it; a risk-approved
    ``OrderApproved`` (an exit) needs no one else.
    """
    for message in out:
        if isinstance(message, OrderProposed | OrderApproved):
            return (
                message.order_id,
                message.symbol,
                str(message.side),
                message.amount,
                message.reference_price,
                isinstance(message, OrderProposed),
                message.ts_event,
            )
    return (None,) * 7


async def save_risk_state(
    conn: asyncpg.Connection,
    run_id: str,
    state: CoreState,
    wall_now: datetime,
    approved: Iterable[object] = (),
) -> None:
    """Save the state and record the order among ``approved`` (a step's output), in one statement."""
    d = state.daily
    await conn.execute(
        _SAVE_STATE,
        run_id,
        state.consecutive_losses,
        state.cooldown_until,
        json.dumps(dict(state.pending_orders)),
        state.last_event_at,
        wall_now,
        d.day,
        d.total_pnl,
        d.buy_count,
        d.sell_count,
        d.trade_count,
        d.is_trading_halted,
        *approval_of(approved),
    )


async def write_audits(conn: asyncpg.Connection, run_id: str, audits: Sequence[AuditEntry]) -> None:
    if not audits:
        return
    await conn.execute(
        _WRITE_AUDITS,
        run_id,
        [a.violation_type for a in audits],
        [a.description for a in audits],
        [a.symbol for a in audits],
        [a.order_id for a in audits],
        [a.ts_event for a in audits],
    )


async def read_ledger(
    conn: asyncpg.Connection,
    run_id: str,
    currency: str,
    symbol: str | None = None,
    minute: datetime | None = None,
) -> LedgerRows:
    """Cash and positions of the run as the executor last committed them, the recorded close of
    ``symbol``'s candle that opened at ``minute`` and the run's active halt (one round trip)."""
    rows = await conn.fetch(_READ_LEDGER, run_id, currency, symbol, minute)
    held = [row["symbol"] for row in rows if row["symbol"] is not None]
    positions = {
        row["symbol"]: Holding(row["quantity"], row["avg_price"])
        for row in rows
        if row["symbol"] is not None and row["currency"] == currency
    }
    first = rows[0]
    halt = None
    if first["halt_source"] is not None:
        halt = Halt(run_id, first["halt_source"], first["halt_reason"], ensure_utc(first["halted_at"]))
    return LedgerRows(first["balance"], held, positions, first["recorded_close"], halt)


class PgRiskTx:
    """``handlers.RiskTx`` on one PostgreSQL transaction (the statements above)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(self, durable: str, msg_id: str, run_id: str) -> bool:
        return await claim_on(self.conn, durable, msg_id, run_id)

    async def load_state(self, run_id: str, now: datetime, params: RiskParams) -> CoreState:
        return await load_risk_state(self.conn, run_id, now, params)

    async def load_state_with_fill(
        self, run_id: str, order_id: str, now: datetime, params: RiskParams
    ) -> tuple[CoreState, RecordedFill | None]:
        return await load_risk_state_with_fill(self.conn, run_id, order_id, now, params)

    async def read_ledger(self, run_id: str, currency: str, symbol: str, minute: datetime) -> LedgerRows:
        return await read_ledger(self.conn, run_id, currency, symbol, minute)

    async def save_state(self, run_id: str, state: CoreState, approved: Iterable[object] = ()) -> None:
        await save_risk_state(self.conn, run_id, state, wall_clock_now(), approved)

    async def write_audits(self, run_id: str, audits: Sequence[AuditEntry]) -> None:
        await write_audits(self.conn, run_id, audits)


def pg_risk_book(db: Database) -> TransactionBook[PgRiskTx]:
    """``handlers.RiskBook`` on PostgreSQL: each transaction one connection of the pool."""
    return TransactionBook(db, PgRiskTx)


async def recorded_hourly_closes(
    db: Database, symbol: str, start: datetime, end: datetime
) -> list[tuple[datetime, Decimal]]:
    """``refit.RecordedHours`` on ``market_data``: the hourly closes of the 1m rows opened in
    ``[start, end)`` (the collector's table, read only), oldest first."""
    async with db.session() as session:
        hours = await load_hourly_candles(session, symbol, start, end)
    return [(hour.ts_open, hour.close) for hour in hours]


# -- Redis --------------------------------------------------------------------------------------


class RiskCache:
    """Risk's Redis reads and writes. Redis is a cache, and an outage must not change a decision,
    so no read falls back to a default (issue 19):

    * prices, volatility states and each day's reference equity are mirrored in memory (risk is
      their only writer); while Redis is unavailable a decision reads the mirror, which holds
      exactly what Redis holds;
    * a value the mirror does not know (the process started during the outage), and a write a
      later decision depends on (volatility state, hourly closes), raise :class:`TransientError`:
      the message waits in place until Redis answers;
    * a reference equity is written once per day: a failed write stays in the mirror and is written
      when Redis answers again. A failed price write is only skipped (readers prefer memory).

    After a failure Redis is skipped for ``retry_seconds``, so an outage costs one timeout, not one
    per message.
    """

    def __init__(self, cache: Cache | None, retry_seconds: float) -> None:
        self.cache = cache
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._prices: dict[str, PriceMemory] = {}
        self._volatility: dict[tuple[str, str], str | None] = {}
        """(run, symbol) -> the volatility JSON as Redis last had it (None: no state)."""
        self._reference: dict[tuple[str, date], Decimal] = {}
        self._unsaved_reference: dict[tuple[str, date], tuple[Decimal, int]] = {}

    @property
    def available(self) -> bool:
        return self.cache is not None and time.monotonic() >= self._down_until

    async def _try(self, purpose: str, op: Callable[[Cache], Awaitable[T]]) -> tuple[bool, T | None]:
        if self.cache is None or not self.available:
            return False, None
        try:
            return True, await op(self.cache)
        except (TransientError, RedisError) as exc:
            self._failed(purpose, exc)
            return False, None

    async def _must(self, purpose: str, op: Callable[[Cache], Awaitable[T]]) -> T | None:
        """``op``, or :class:`TransientError` when Redis is unavailable (the message waits)."""
        ok, value = await self._try(purpose, op)
        if not ok and self.cache is not None:
            raise TransientError(f"redis unavailable: {purpose} must be read or written to decide exactly")
        return value

    def _failed(self, purpose: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_seconds
        metrics.CACHE_FAILURES.labels(purpose).inc()
        CACHE_FALLBACKS.labels(purpose).inc()
        log.warning("redis unavailable: %s falls back (%s: %s)", purpose, type(exc).__name__, exc)

    # prices (§4.4) ------------------------------------------------------------------------------
    def _remember_price(self, run_id: str, symbol: str, price: Decimal, at: datetime) -> str | None:
        """Keep the price in memory unless a later one is known; the Redis value to SET, if any."""
        if not self._prices.setdefault(run_id, PriceMemory()).note(symbol, price, at):
            return None
        return f"{format(price, 'f')}|{ensure_utc(at).isoformat()}"

    async def note_price(self, run_id: str, symbol: str, price: Decimal, at: datetime) -> None:
        value = self._remember_price(run_id, symbol, price, at)
        if value is not None:
            await self._try("price", lambda c: c.set(keys.price(symbol, run_id), value))

    async def note_price_and_read_volatility(
        self, run_id: str, symbol: str, price: Decimal, at: datetime
    ) -> VolatilityReading:
        """:meth:`note_price`, then :meth:`volatility` of the same symbol, in one Redis round trip.

        Same effects and fallbacks as the two calls in a row: a failed connection counts against
        the price (the first command) and the reading comes from the mirror, as when the SET alone
        fails; a failed GET counts against the volatility multiplier.
        """
        value = self._remember_price(run_id, symbol, price, at)
        if value is None:
            return await self.volatility(run_id, symbol)

        async def both(c: Cache) -> list[Any]:
            async with c.client.pipeline(transaction=False) as pipe:
                pipe.set(keys.price(symbol, run_id), value)
                pipe.get(keys.volatility_state(symbol, run_id))
                return list(await pipe.execute(raise_on_error=False))

        ok, replies = await self._try("price", both)
        if not ok or replies is None:
            return self._mirrored_volatility(run_id, symbol)
        stored, raw = replies
        if isinstance(stored, RedisError):
            self._failed("price", stored)
            return self._mirrored_volatility(run_id, symbol)
        if isinstance(raw, RedisError):
            self._failed("volatility multiplier", raw)
            return VolatilityReading(None, available=False)
        self._volatility[(run_id, symbol)] = raw
        if self._unsaved_reference:  # Redis answers again: write what the outage kept in memory
            await self._save_unsaved_references()
        return self._volatility_reading(symbol, raw)

    async def prices(self, run_id: str, symbols: Iterable[str]) -> dict[str, Decimal]:
        """Latest seen price per symbol: memory, else Redis (then remembered), else absent.

        A symbol memory does not know while Redis is unavailable raises :class:`TransientError`:
        the average price in its place would change the exposure."""
        book = self._prices.setdefault(run_id, PriceMemory()).known
        out: dict[str, Decimal] = {}
        for symbol in symbols:
            if symbol not in book:
                raw = await self._must("price", lambda c, s=symbol: c.get(keys.price(s, run_id)))
                if raw:
                    text, _, stamp = raw.partition("|")
                    at = (
                        ensure_utc(datetime.fromisoformat(stamp))
                        if stamp
                        else datetime.min.replace(tzinfo=UTC)
                    )
                    book[symbol] = (Decimal(text), at)
            if symbol in book:
                out[symbol] = book[symbol][0]
        return out

    # reference equity (§4.3) --------------------------------------------------------------------
    async def reference_equity(self, run_id: str, day: date) -> Decimal | None:
        """The day's snapshot: memory (it is written once a day, by risk), else Redis.

        Redis unavailable and memory without it raises :class:`TransientError`: a snapshot taken
        again now would differ from the one taken at the day's first entry."""
        known = self._reference.get((run_id, day))
        if known is not None:
            return known
        await self._save_unsaved_references()
        raw = await self._must("reference equity", lambda c: c.get(keys.reference_equity(day, run_id)))
        if not raw:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return None
        if not value.is_finite() or value <= 0:
            return None
        self._reference[(run_id, day)] = value
        return value

    async def keep_reference_equity(self, run_id: str, day: date, value: Decimal, ttl: int) -> None:
        """Remember the day's snapshot; written to Redis now, or when Redis answers again."""
        self._reference[(run_id, day)] = value
        if self.cache is not None:
            self._unsaved_reference[(run_id, day)] = (value, ttl)
            await self._save_unsaved_references()

    async def _save_unsaved_references(self) -> None:
        for (run_id, day), (value, ttl) in list(self._unsaved_reference.items()):
            key = keys.reference_equity(day, run_id)
            ok, _ = await self._try(
                "reference equity", lambda c, k=key, v=value, t=ttl: c.set(k, format(v, "f"), t)
            )
            if not ok:
                return
            del self._unsaved_reference[(run_id, day)]

    # volatility (§4.9) --------------------------------------------------------------------------
    async def volatility(self, run_id: str, symbol: str) -> VolatilityReading:
        ok, raw = await self._try(
            "volatility multiplier", lambda c: c.get(keys.volatility_state(symbol, run_id))
        )
        if not ok:
            return self._mirrored_volatility(run_id, symbol)
        self._volatility[(run_id, symbol)] = raw
        return self._volatility_reading(symbol, raw)

    def _mirrored_volatility(self, run_id: str, symbol: str) -> VolatilityReading:
        """The state as Redis last had it; :class:`TransientError` when this process never saw it
        (multiplier 1.0 in its place could change the size)."""
        if (run_id, symbol) not in self._volatility:
            if self.cache is None:
                return VolatilityReading(None, available=False)
            raise TransientError(f"redis unavailable: volatility state of {symbol} not known to this process")
        return self._volatility_reading(symbol, self._volatility[(run_id, symbol)])

    @staticmethod
    def _volatility_reading(symbol: str, raw: str | None) -> VolatilityReading:
        if raw is None:
            return VolatilityReading(None)
        try:
            return VolatilityReading(VolatilityState.from_json(raw))
        except ValueError as exc:
            metrics.CACHE_FAILURES.labels("volatility multiplier").inc()
            log.warning("malformed volatility state of %s ignored: %s", symbol, exc)
            return VolatilityReading(None, available=False)

    async def keep_volatility(self, run_id: str, state: VolatilityState) -> bool:
        """SET the fitted state; :class:`TransientError` when Redis is unavailable (the refit's
        candle waits: later sizing depends on this write)."""
        raw = state.to_json()
        await self._must(
            "volatility state", lambda c: c.set(keys.volatility_state(state.symbol, run_id), raw)
        )
        self._volatility[(run_id, state.symbol)] = raw
        return True

    async def drop_volatility(self, run_id: str, symbol: str) -> None:
        await self._must("volatility state", lambda c: c.delete(keys.volatility_state(symbol, run_id)))
        self._volatility[(run_id, symbol)] = None

    async def add_hourly_close(
        self, run_id: str, symbol: str, ts_open: datetime, close: Decimal, keep: int
    ) -> bool:
        """Add the close to the GARCH window; :class:`TransientError` when Redis is unavailable
        (a window with a hole would fit another volatility)."""
        key = hourly_closes_key(symbol, run_id)
        score = int(ensure_utc(ts_open).timestamp())
        member = f"{score}:{format(close, 'f')}"

        async def run(c: Cache) -> None:
            async with c.client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, score, score)
                pipe.zadd(key, {member: score})
                pipe.zremrangebyrank(key, 0, -(keep + 1))
                await pipe.execute()

        await self._must("hourly closes", run)
        return self.cache is not None

    async def add_hourly_closes(
        self, run_id: str, symbol: str, hours: Sequence[tuple[datetime, Decimal]], keep: int
    ) -> bool:
        """:meth:`add_hourly_close` of each hour, in one transaction (one round trip)."""
        if not hours:
            return self.cache is not None
        key = hourly_closes_key(symbol, run_id)
        scored = [(int(ensure_utc(ts_open).timestamp()), close) for ts_open, close in hours]

        async def run(c: Cache) -> None:
            async with c.client.pipeline(transaction=True) as pipe:
                for score, close in scored:
                    pipe.zremrangebyscore(key, score, score)
                    pipe.zadd(key, {f"{score}:{format(close, 'f')}": score})
                pipe.zremrangebyrank(key, 0, -(keep + 1))
                await pipe.execute()

        await self._must("hourly closes", run)
        return self.cache is not None

    async def hourly_closes(self, run_id: str, symbol: str) -> list[tuple[datetime, Decimal]] | None:
        """The stored window, oldest first; None without Redis configured; :class:`TransientError`
        when Redis is unavailable."""
        if self.cache is None:
            return None
        members = await self._must(
            "hourly closes", lambda c: c.client.zrange(hourly_closes_key(symbol, run_id), 0, -1)
        )
        out = []
        for member in members or ():
            stamp, _, close = str(member).partition(":")
            out.append((datetime.fromtimestamp(int(stamp), UTC), Decimal(close)))
        return out
