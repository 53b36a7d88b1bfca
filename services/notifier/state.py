"""The notifier's only SQL: delivery log and sent-claims, report boundaries, trades to report."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.clock import ensure_utc
from coinpilot.contracts import Side
from coinpilot.db import (
    AccountState,
    Database,
    JobRun,
    NotificationDelivery,
    NotificationSent,
    TradingHistory,
)
from services.notifier.core import AttemptStatus, Notification, Sink
from services.notifier.daily_figures import TradeRow
from services.notifier.delivery import Attempt

DAILY_REPORT_JOB = "daily_report"
REPORT_START_JOB = "daily_report_start"  # the first boundary a run reports (not a report)


class PgJournal:
    """``DeliveryJournal`` on PostgreSQL: ``notification_deliveries`` and ``notification_sent``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def already_sent(self, sink: Sink, event_key: str) -> bool:
        async with self._db.session() as s:
            found = await s.execute(
                select(NotificationSent.event_key).where(
                    NotificationSent.sink == str(sink), NotificationSent.event_key == event_key
                )
            )
            return found.scalar_one_or_none() is not None

    async def record(self, attempt: Attempt) -> None:
        n = attempt.notification
        sent = attempt.status is AttemptStatus.SENT
        async with self._db.session() as s:
            await s.execute(
                insert(NotificationDelivery).values(
                    event_key=n.event_key,
                    sink=str(n.sink),
                    event_type=str(n.event_type),
                    attempt=attempt.number,
                    status="success" if sent else "failed",
                    http_status=attempt.status_code,
                    error=None if attempt.error is None else f"{attempt.status}: {attempt.error}",
                    latency_ms=round(attempt.seconds * 1000),
                )
            )
            if sent:
                await s.execute(
                    insert(NotificationSent)
                    .values(sink=str(n.sink), event_key=n.event_key)
                    .on_conflict_do_nothing(index_elements=["sink", "event_key"])
                )

    async def give_up(self, n: Notification, attempts: int, reason: str) -> None:
        async with self._db.session() as s:
            await s.execute(
                insert(NotificationDelivery).values(
                    event_key=n.event_key,
                    sink=str(n.sink),
                    event_type=str(n.event_type),
                    attempt=attempts,
                    status="dead",
                    error=reason,
                )
            )


async def claim_report(session: AsyncSession, run_id: str, boundary: datetime) -> bool:
    """True once per (run, boundary): the row stays locked until the caller's transaction ends."""
    result = await session.execute(
        insert(JobRun)
        .values(run_id=run_id, job_name=DAILY_REPORT_JOB, boundary=boundary)
        .on_conflict_do_nothing(index_elements=["run_id", "job_name", "boundary"])
        .returning(JobRun.boundary)
    )
    return result.scalar_one_or_none() is not None


async def report_progress(db: Database, run_id: str) -> tuple[datetime | None, datetime | None]:
    """(last boundary reported, the run's first boundary to report), both None for a new run."""
    async with db.session() as s:
        found = await s.execute(
            select(JobRun.job_name, func.max(JobRun.boundary), func.min(JobRun.boundary))
            .where(JobRun.run_id == run_id, JobRun.job_name.in_((DAILY_REPORT_JOB, REPORT_START_JOB)))
            .group_by(JobRun.job_name)
        )
        rows = {name: (latest, earliest) for name, latest, earliest in found.all()}
    fired = rows.get(DAILY_REPORT_JOB, (None, None))[0]
    start = rows.get(REPORT_START_JOB, (None, None))[1]
    return (None if fired is None else ensure_utc(fired)), (None if start is None else ensure_utc(start))


async def record_report_start(db: Database, run_id: str, boundary: datetime) -> datetime:
    """Remember where a run's reports begin, so a restart resumes there; returns the one kept.

    The earliest recorded start wins when two replicas race, so both go on from the same day.
    """
    async with db.session() as s:
        await s.execute(
            insert(JobRun)
            .values(run_id=run_id, job_name=REPORT_START_JOB, boundary=boundary)
            .on_conflict_do_nothing(index_elements=["run_id", "job_name", "boundary"])
        )
        kept = await s.scalar(
            select(func.min(JobRun.boundary)).where(
                JobRun.run_id == run_id, JobRun.job_name == REPORT_START_JOB
            )
        )
    return ensure_utc(kept)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _post_1h(post_exit_prices: Mapping[str, Any] | None) -> float | None:
    point = (post_exit_prices or {}).get("1h")
    if not isinstance(point, Mapping) or point.get("change_pct") is None:
        return None
    return float(point["change_pct"])


def trade_row(row: Mapping[str, Any]) -> TradeRow:
    ledger = (row["signal_info"] or {}).get("ledger") or {}
    return TradeRow(
        order_id=row["order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        price=row["price"],
        quantity=row["quantity"],
        fee=row["fee"],
        executed_at=ensure_utc(row["executed_at"]),
        balance_after=_decimal(ledger.get("balance_after")),
        position_quantity_after=_decimal(ledger.get("position_quantity_after")),
        entry_avg_price=row["entry_avg_price"],
        exit_reason=row["exit_reason"],
        post_1h_change_pct=_post_1h(row["post_exit_prices"]),
    )


async def load_trades(db: Database, run_id: str, currency: str, before: datetime) -> list[TradeRow]:
    """Every FILLED trade of the account up to ``before`` (history is needed for cash and FIFO)."""
    t = TradingHistory
    async with db.session() as s:
        result = await s.execute(
            select(
                t.order_id,
                t.symbol,
                t.side,
                t.price,
                t.quantity,
                t.fee,
                t.executed_at,
                t.signal_info,
                t.entry_avg_price,
                t.exit_reason,
                t.post_exit_prices,
            )
            .where(t.run_id == run_id, t.currency == currency, t.status == "FILLED", t.executed_at < before)
            .order_by(t.executed_at, t.created_at)
        )
        return [trade_row(r) for r in result.mappings()]


async def initial_balance(db: Database, run_id: str, currency: str) -> Decimal | None:
    async with db.session() as s:
        found = await s.execute(
            select(AccountState.initial_balance).where(
                AccountState.run_id == run_id, AccountState.currency == currency
            )
        )
        return found.scalar_one_or_none()
