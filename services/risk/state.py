"""The risk service's only SQL and Redis.

PostgreSQL (the truth): ``risk_state`` (loss streak, cooldown, pending BUYs; survives the day),
``daily_risk_state`` (one row per run and trading day), ``risk_audit`` (idempotent on run, order
and violation); ``account_state`` and ``positions`` are the executor's, read here only.

Redis (rebuildable, every read has a fallback):

| key | fallback when missing or Redis is down |
|---|---|
| ``coinpilot:volatility_state:<SYM>`` | multiplier 1.0 (counted, logged) |
| ``coinpilot:hourly_closes:<SYM>`` (sorted set, risk's GARCH window) | no refit until it refills |
| ``coinpilot:reference_equity:<day>`` | recomputed from the ledger (balance + exposure) |
| ``price:<SYM>`` | the position's average price (§4.4) |

Prices are also kept in memory, so a Redis outage does not change the exposure of a running
process; after a failure Redis is skipped for ``retry_seconds`` so an outage costs one timeout,
not one per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import CACHE_FALLBACKS, Cache, keys
from coinpilot.clock import ensure_utc, trading_day, trading_day_start
from coinpilot.db import AccountState, DailyRiskState, RiskAudit, RiskState
from coinpilot.db import Position as PositionRow
from coinpilot.errors import TransientError
from services.risk import metrics
from services.risk.core import AuditEntry, DailyState, Holding, Ledger, VolatilityReading
from services.risk.core import RiskState as CoreState
from services.risk.params import RiskParams

log = logging.getLogger("coinpilot.risk")
T = TypeVar("T")


def hourly_closes_key(symbol: str, run_id: str) -> str:
    """Risk's GARCH window: hourly closes of ``symbol`` (score = hour start, epoch seconds)."""
    return f"{keys.namespace(run_id)}coinpilot:hourly_closes:{symbol}"


# -- PostgreSQL ---------------------------------------------------------------------------------


async def load_risk_state(session: AsyncSession, run_id: str, now: datetime, params: RiskParams) -> CoreState:
    """The run's risk state, row-locked until the transaction ends; today's row if there is one."""
    await session.execute(
        insert(RiskState).values(run_id=run_id).on_conflict_do_nothing(index_elements=["run_id"])
    )
    row = (
        await session.execute(select(RiskState).where(RiskState.run_id == run_id).with_for_update())
    ).scalar_one()
    daily_row = (
        await session.execute(
            select(DailyRiskState)
            .where(DailyRiskState.run_id == run_id)
            .order_by(DailyRiskState.date.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if daily_row is None:
        daily = DailyState(trading_day(now, params.day_boundary))
    else:
        daily = DailyState(
            day=daily_row.date,
            total_pnl=daily_row.total_pnl,
            buy_count=daily_row.buy_count,
            sell_count=daily_row.sell_count,
            trade_count=daily_row.trade_count,
            is_trading_halted=daily_row.is_trading_halted,
        )
    return CoreState(
        daily=daily,
        consecutive_losses=row.consecutive_losses,
        cooldown_until=None if row.cooldown_until is None else ensure_utc(row.cooldown_until),
        pending_orders=dict(row.pending_orders or {}),
        last_event_at=None if row.last_event_at is None else ensure_utc(row.last_event_at),
    )


async def save_risk_state(session: AsyncSession, run_id: str, state: CoreState, wall_now: datetime) -> None:
    persistent = {
        "consecutive_losses": state.consecutive_losses,
        "cooldown_until": state.cooldown_until,
        "pending_orders": dict(state.pending_orders),
        "last_event_at": state.last_event_at,
        "updated_at": wall_now,
    }
    await session.execute(
        insert(RiskState)
        .values(run_id=run_id, **persistent)
        .on_conflict_do_update(index_elements=["run_id"], set_=persistent)
    )
    d = state.daily
    daily = {
        "total_pnl": d.total_pnl,
        "buy_count": d.buy_count,
        "sell_count": d.sell_count,
        "trade_count": d.trade_count,
        "is_trading_halted": d.is_trading_halted,
        # mirrored for readers of the original table; the truth is risk_state (survives the day)
        "consecutive_losses": state.consecutive_losses,
        "cooldown_until": state.cooldown_until,
        "updated_at": wall_now,
    }
    await session.execute(
        insert(DailyRiskState)
        .values(run_id=run_id, date=d.day, **daily)
        .on_conflict_do_update(index_elements=["run_id", "date"], set_=daily)
    )


async def write_audits(session: AsyncSession, run_id: str, audits: Iterable[AuditEntry]) -> None:
    for audit in audits:
        await session.execute(
            insert(RiskAudit)
            .values(
                run_id=run_id,
                violation_type=audit.violation_type,
                description=audit.description,
                symbol=audit.symbol,
                order_id=audit.order_id,
                ts_event=audit.ts_event,
            )
            .on_conflict_do_nothing(constraint="uq_risk_audit_run_order_violation")
        )


async def load_ledger(
    session: AsyncSession,
    run_id: str,
    currency: str,
    *,
    prices: Mapping[str, Decimal],
    reference_equity: Decimal | None,
    initial_balance: Decimal | None,
) -> Ledger:
    """Cash and positions of the run in ``currency`` as the executor last committed them."""
    balance = (
        await session.execute(
            select(AccountState.balance).where(
                AccountState.run_id == run_id, AccountState.currency == currency
            )
        )
    ).scalar_one_or_none()
    if balance is None:
        balance = initial_balance
    rows = (
        await session.execute(
            select(PositionRow).where(
                PositionRow.run_id == run_id, PositionRow.currency == currency, PositionRow.quantity > 0
            )
        )
    ).scalars()
    positions = {row.symbol: Holding(row.quantity, row.avg_price) for row in rows}
    return Ledger(balance, positions, dict(prices), reference_equity)


async def held_symbols(session: AsyncSession, run_id: str) -> list[str]:
    rows = await session.execute(
        select(PositionRow.symbol).where(PositionRow.run_id == run_id, PositionRow.quantity > 0)
    )
    return list(rows.scalars())


# -- Redis --------------------------------------------------------------------------------------


def reference_equity_ttl(now: datetime, params: RiskParams) -> int:
    """Seconds until the next trading-day boundary, at least one hour."""
    day = trading_day(now, params.day_boundary)
    nxt = trading_day_start(day, params.day_boundary) + timedelta(days=1)
    return max(keys.REFERENCE_EQUITY_MIN_TTL_SECONDS, int((nxt - ensure_utc(now)).total_seconds()))


class RiskCache:
    """Risk's Redis reads and writes, each with its documented fallback (never raises)."""

    def __init__(self, cache: Cache | None, retry_seconds: float) -> None:
        self.cache = cache
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._prices: dict[str, dict[str, tuple[Decimal, datetime]]] = {}

    @property
    def available(self) -> bool:
        return self.cache is not None and time.monotonic() >= self._down_until

    async def _try(self, purpose: str, op: Callable[[Cache], Awaitable[T]]) -> tuple[bool, T | None]:
        if self.cache is None or not self.available:
            return False, None
        try:
            return True, await op(self.cache)
        except (TransientError, RedisError) as exc:
            self._down_until = time.monotonic() + self.retry_seconds
            metrics.CACHE_FAILURES.labels(purpose).inc()
            CACHE_FALLBACKS.labels(purpose).inc()
            log.warning("redis unavailable: %s falls back (%s: %s)", purpose, type(exc).__name__, exc)
            return False, None

    # prices (§4.4) ------------------------------------------------------------------------------
    async def note_price(self, run_id: str, symbol: str, price: Decimal, at: datetime) -> None:
        book = self._prices.setdefault(run_id, {})
        known = book.get(symbol)
        if known is not None and known[1] > at:
            return
        book[symbol] = (price, at)
        value = f"{format(price, 'f')}|{ensure_utc(at).isoformat()}"
        await self._try("price", lambda c: c.set(keys.price(symbol, run_id), value))

    async def prices(self, run_id: str, symbols: Iterable[str]) -> dict[str, Decimal]:
        """Latest seen price per symbol: memory, else Redis (then remembered), else absent."""
        book = self._prices.setdefault(run_id, {})
        out: dict[str, Decimal] = {}
        for symbol in symbols:
            if symbol not in book:
                ok, raw = await self._try("price", lambda c, s=symbol: c.get(keys.price(s, run_id)))
                if ok and raw:
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
        ok, raw = await self._try("reference equity", lambda c: c.get(keys.reference_equity(day, run_id)))
        if not ok or not raw:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return None
        return value if value.is_finite() and value > 0 else None

    async def keep_reference_equity(self, run_id: str, day: date, value: Decimal, ttl: int) -> None:
        await self._try(
            "reference equity", lambda c: c.set(keys.reference_equity(day, run_id), format(value, "f"), ttl)
        )

    # volatility (§4.9) --------------------------------------------------------------------------
    async def volatility(self, run_id: str, symbol: str) -> VolatilityReading:
        ok, raw = await self._try(
            "volatility multiplier", lambda c: c.get(keys.volatility_state(symbol, run_id))
        )
        if not ok:
            return VolatilityReading(None, available=False)
        if raw is None:
            return VolatilityReading(None)
        try:
            return VolatilityReading(VolatilityState.from_json(raw))
        except ValueError as exc:
            metrics.CACHE_FAILURES.labels("volatility multiplier").inc()
            log.warning("malformed volatility state of %s ignored: %s", symbol, exc)
            return VolatilityReading(None, available=False)

    async def keep_volatility(self, run_id: str, state: VolatilityState) -> bool:
        ok, _ = await self._try(
            "volatility state", lambda c: c.set(keys.volatility_state(state.symbol, run_id), state.to_json())
        )
        return ok

    async def drop_volatility(self, run_id: str, symbol: str) -> None:
        await self._try("volatility state", lambda c: c.delete(keys.volatility_state(symbol, run_id)))

    async def add_hourly_close(
        self, run_id: str, symbol: str, ts_open: datetime, close: Decimal, keep: int
    ) -> bool:
        key = hourly_closes_key(symbol, run_id)
        score = int(ensure_utc(ts_open).timestamp())
        member = f"{score}:{format(close, 'f')}"

        async def run(c: Cache) -> None:
            async with c.client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, score, score)
                pipe.zadd(key, {member: score})
                pipe.zremrangebyrank(key, 0, -(keep + 1))
                await pipe.execute()

        ok, _ = await self._try("hourly closes", run)
        return ok

    async def hourly_closes(self, run_id: str, symbol: str) -> list[tuple[datetime, Decimal]] | None:
        """The stored window, oldest first; None when Redis is unavailable."""
        ok, members = await self._try(
            "hourly closes", lambda c: c.client.zrange(hourly_closes_key(symbol, run_id), 0, -1)
        )
        if not ok:
            return None
        out = []
        for member in members or ():
            stamp, _, close = str(member).partition(":")
            out.append((datetime.fromtimestamp(int(stamp), UTC), Decimal(close)))
        return out
