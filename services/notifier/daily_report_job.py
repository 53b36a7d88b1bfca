"""The daily report: built from the database, scheduled by event time, published once per boundary."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal

from coinpilot.bus import LIVE_RUN
from coinpilot.clock import DAY, ensure_utc
from coinpilot.contracts import DailyReport, ExitBreakdown, Side
from coinpilot.db import Database
from services.notifier import metrics, state
from services.notifier.core import (
    ReportSchedule,
    first_report_boundary,
    next_unreported,
    report_date_of,
    report_window,
    reports_due,
)
from services.notifier.daily_figures import TradeRow, compute_daily
from services.notifier.summarizer import Summarizer, write_summary

log = logging.getLogger("coinpilot.notifier.report")

Publish = Callable[[DailyReport, str], Awaitable[None]]


def _cash_before_first(rows: list[TradeRow]) -> Decimal:
    """The account's starting cash, from its first fill, when ``account_state`` has no row."""
    if not rows or rows[0].balance_after is None:
        return Decimal(0)
    first = rows[0]
    gross = first.price * first.quantity
    if first.side is Side.BUY:
        return first.balance_after + gross + first.fee
    return first.balance_after - gross + first.fee


async def build_daily_report(
    db: Database,
    report_date: date,
    run_id: str,
    summarizer: Summarizer | None,
    currency: str = "KRW",
) -> DailyReport:
    """The report for the 24 h ending 22:00 KST on ``report_date`` (``coinpilot report daily``)."""
    start, end = report_window(report_date)
    rows = await state.load_trades(db, run_id, currency, end)
    initial = await state.initial_balance(db, run_id, currency)
    figures = compute_daily(
        rows, start, end, currency, initial if initial is not None else _cash_before_first(rows)
    )
    summary = await write_summary(summarizer, figures, report_date)
    metrics.REPORTS.labels(summary.kind).inc()
    return DailyReport(
        ts_event=end,
        report_date=report_date,
        period_start=start,
        period_end=end,
        currency=currency,
        total_pnl=figures.total_pnl,
        trades=figures.trades,
        sell_trades=figures.sell_trades,
        win_rate=figures.win_rate,
        mdd_pct=figures.mdd_pct,
        loss_ratio_pct=figures.loss_ratio_pct,
        exit_breakdown={
            reason: ExitBreakdown(
                ts_event=end, count=b.count, avg_pnl_pct=b.avg_pnl_pct, avg_post_1h_pct=b.avg_post_1h_pct
            )
            for reason, b in figures.exit_breakdown.items()
        },
        notes=figures.notes,
        summary=summary.text,
    )


class ReportClock:
    """Event time per run, advanced by every message the notifier sees; fires each report once.

    ``observe`` only records time (handlers never wait for the LLM); ``check`` builds and publishes
    every report that is due, oldest first, however far event time moved since the last check. The
    claim row in ``job_runs`` is held in an open transaction while a report is built and published,
    so two replicas never both publish it and a failed publish retries later, from that report on.
    """

    def __init__(
        self,
        db: Database,
        schedule: ReportSchedule,
        summarizer: Summarizer | None,
        publish: Publish,
        currency: str,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._wall_clock = wall_clock
        self._schedule = schedule
        self._summarizer = summarizer
        self._publish = publish
        self._currency = currency
        self._now: dict[str, datetime] = {}
        self._first_seen: dict[str, datetime] = {}
        self._next: dict[str, datetime] = {}  # per run: the first boundary not reported yet
        self.changed = asyncio.Event()

    def observe(self, run_id: str, ts_event: datetime) -> None:
        ts = ensure_utc(ts_event)
        if run_id not in self._first_seen or ts < self._first_seen[run_id]:
            self._first_seen[run_id] = ts
        if run_id not in self._now or ts > self._now[run_id]:
            self._now[run_id] = ts
            self.changed.set()

    async def check(self) -> list[DailyReport]:
        """Publish every report that event time has made due, in order; returns them."""
        self.changed.clear()
        published = []
        for run_id, now in list(self._now.items()):
            if run_id not in self._next:
                self._next[run_id] = await self._resume(run_id)
            for boundary in reports_due(now, self._next[run_id], self._schedule):
                report = await self._fire(run_id, boundary)
                self._next[run_id] = boundary + DAY
                if report is not None:
                    published.append(report)
        return published

    async def _resume(self, run_id: str) -> datetime:
        """The run's first unreported boundary: after its last report, or where its reports begin.

        A new run's beginning is recorded, so a restart before its first report resumes there
        instead of at whatever event time it sees first after the restart.
        """
        last_fired, start = await state.report_progress(self._db, run_id)
        if start is None:
            if last_fired is not None:
                start = next_unreported(last_fired, self._schedule)
            else:
                wall = self._wall_clock() if run_id == LIVE_RUN and self._wall_clock is not None else None
                start = first_report_boundary(self._first_seen[run_id], self._schedule, wall)
            start = await state.record_report_start(self._db, run_id, start)
        if last_fired is None:
            return start
        return max(start, next_unreported(last_fired, self._schedule))

    async def _fire(self, run_id: str, boundary: datetime) -> DailyReport | None:
        async with self._db.session() as session:
            if not await state.claim_report(session, run_id, boundary):
                return None
            report = await build_daily_report(
                self._db, report_date_of(boundary), run_id, self._summarizer, self._currency
            )
            await self._publish(report, run_id)
        log.info("daily report %s published for run %s", report.report_date, run_id)
        return report

    async def run(self, poll_seconds: float) -> None:
        """Background task: check whenever event time moved (at most every ``poll_seconds``)."""
        while True:
            await self.changed.wait()
            try:
                await self.check()
            except Exception:
                self.changed.set()  # still due: the restarted task tries again
                raise
            await asyncio.sleep(poll_seconds)
