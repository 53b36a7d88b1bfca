"""The daily report on real trades spanning midnight UTC, its LLM summary, and its once-only schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from openai import AsyncOpenAI

from coinpilot.contracts import DailyReport, ExitBreakdown, ExitReason, Fill
from coinpilot.db import Database
from coinpilot.errors import TransientError
from services.executor.app import execute_order
from services.executor.core import FillParams
from services.executor.venue import PaperVenue
from services.notifier.core import ReportSchedule
from services.notifier.daily_report_job import ReportClock, build_daily_report
from services.notifier.summarizer import OpenAiSummarizer
from tests.integration.notifier.fake_openai import API_KEY, FakeOpenAi
from tests.support.provenance import Approvals
from tests.unit.executor.factories import buy_order, sell_order

pytestmark = pytest.mark.postgres

D = Decimal
UPBIT = PaperVenue(FillParams(fee_rate=D("0.0005")))  # no slippage: fills at the decision price


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def sell(
    symbol: str, price: str, qty: str, avg: str, bought_at: datetime, when: datetime, reason: ExitReason
):
    return sell_order(
        price,
        symbol=symbol,
        opened_by=f"{symbol}:{bought_at:%Y-%m-%dT%H:%MZ}:buy",
        quantity=qty,
        avg_price=avg,
        high_water_mark=avg,
        at=when,
        opened_at=bought_at,
        exit_reason=reason,
    )


# The report of 2026-03-02 covers [03-01 13:00 UTC, 03-02 13:00 UTC) = 22:00 KST to 22:00 KST.
ORDERS = [
    buy_order("3000000", "3000000", symbol="KRW-ETH", at=at(1, 10)),  # before: 1 ETH, fee 1,500
    buy_order("100000000", "1000000", symbol="KRW-BTC", at=at(1, 12, 59)),  # before: 0.01 BTC, fee 500
    # in the window:
    sell("KRW-BTC", "101000000", "0.01", "100000000", at(1, 12, 59), at(1, 13), ExitReason.TAKE_PROFIT),
    buy_order("1000", "1000000", symbol="KRW-XRP", at=at(1, 20)),
    sell("KRW-ETH", "2900000", "1", "3000000", at(1, 10), at(1, 23, 30), ExitReason.STOP_LOSS),
    sell(
        "KRW-XRP", "990", "1000", "1000", at(1, 20), at(2, 0, 30), ExitReason.STOP_LOSS
    ),  # after midnight UTC
    buy_order("200000", "2000000", symbol="KRW-SOL", at=at(2, 3)),
    sell("KRW-SOL", "210000", "10", "200000", at(2, 3), at(2, 12, 59), ExitReason.TAKE_PROFIT),
    # the next report's:
    buy_order("100000000", "1000000", symbol="KRW-BTC", at=at(2, 13)),
]


async def trade(db: Database, run_id: str) -> None:
    approvals = Approvals(db)  # genuine orders: approved, and quoted at their recorded close
    try:
        for order in ORDERS:
            await approvals.approve(run_id, order)
            assert isinstance(
                await execute_order(
                    db, UPBIT, order, run_id=run_id, trace_id=None, initial_balance=D(10_000_000)
                ),
                Fill,
            )
    finally:
        await approvals.restore()


async def test_a_day_of_trades_across_midnight_utc_is_counted_once_with_hand_checked_figures(
    notifier_db: Database, run_id: str
) -> None:
    await trade(notifier_db, run_id)
    report = await build_daily_report(notifier_db, date(2026, 3, 2), run_id, None)
    # cash after each fill: 6,998,500; 5,998,000 | in the window: 7,007,495; 6,006,995; 8,905,545;
    #                       9,895,050; 7,894,050; 9,993,000
    # SELL nets: BTC +10,000-505 = 9,495; ETH -100,000-1,450 = -101,450; XRP -10,000-495 = -10,495;
    #            SOL +100,000-1,050 = 98,950 -> total -3,500, 2 wins of 4
    assert (report.period_start, report.period_end, report.ts_event) == (at(1, 13), at(2, 13), at(2, 13))
    assert (report.trades, report.sell_trades, report.total_pnl, report.win_rate) == (6, 4, D("-3500"), 0.5)
    # equity (cash + positions at last fill price): start 5,998,000 + 3,000,000 + 1,000,000 = 9,998,000;
    # then 10,007,495 (peak), 10,006,995, 9,905,545, 9,895,050, 9,894,050 (trough), 9,993,000
    assert report.mdd_pct == pytest.approx((10_007_495 - 9_894_050) / 10_007_495 * 100)
    assert report.loss_ratio_pct == pytest.approx(3_500 / 9_993_000 * 100)
    assert report.exit_breakdown == {
        # (-3.3333 % + -1 %) / 2 and (+1 % + +5 %) / 2
        "STOP_LOSS": ExitBreakdown(ts_event=at(2, 13), count=2, avg_pnl_pct=-2.1667),
        "TAKE_PROFIT": ExitBreakdown(ts_event=at(2, 13), count=2, avg_pnl_pct=3.0),
    }
    assert report.notes == ("Fees paid: 5000 KRW",)
    assert report.summary == (
        "LLM summary unavailable (no API key). "
        "Basic summary: trades=6, sells=4, win_rate=50.0%, total_pnl=-3,500 KRW, mdd=1.13%"
    )
    before = await build_daily_report(notifier_db, date(2026, 3, 1), run_id, None)
    after = await build_daily_report(notifier_db, date(2026, 3, 3), run_id, None)
    assert (before.trades, report.trades, after.trades) == (2, 6, 1)
    assert before.trades + report.trades + after.trades == len(ORDERS)


async def test_the_summary_comes_from_gpt_4o_mini_through_the_real_sdk(
    notifier_db: Database, run_id: str, openai_server: FakeOpenAi
) -> None:
    await trade(notifier_db, run_id)
    openai_server.answer("손익 -3,500 KRW, 승률 50.0%. 손절 2건이 손실을 만들었습니다.")
    client = AsyncOpenAI(api_key=API_KEY, base_url=openai_server.base_url, max_retries=0, timeout=5)
    report = await build_daily_report(notifier_db, date(2026, 3, 2), run_id, OpenAiSummarizer(client))
    assert report.summary == "손익 -3,500 KRW, 승률 50.0%. 손절 2건이 손실을 만들었습니다."
    (request,) = openai_server.requests
    assert (request["model"], request["temperature"]) == ("gpt-4o-mini", 0.7)
    system, user = request["messages"]
    assert system["role"] == "system" and "Korean" in system["content"]
    assert "win rate: 50.0%" in user["content"] and "- STOP_LOSS: count 2" in user["content"]


async def test_an_llm_failure_falls_back_to_the_plain_summary(
    notifier_db: Database, run_id: str, openai_server: FakeOpenAi
) -> None:
    openai_server.fail(500, "The server had an error while processing your request.")
    client = AsyncOpenAI(api_key=API_KEY, base_url=openai_server.base_url, max_retries=0, timeout=5)
    report = await build_daily_report(notifier_db, date(2026, 3, 2), run_id, OpenAiSummarizer(client))
    assert report.summary.startswith("LLM summary failed (InternalServerError: ")
    assert report.summary.endswith(
        "Basic summary: trades=0, sells=0, win_rate=N/A, total_pnl=0 KRW, mdd=0.00%"
    )
    assert report.notes == ("No trades in the window",)


async def test_the_report_fires_once_per_boundary_on_event_time_across_restarts(
    notifier_db: Database, run_id: str
) -> None:
    await trade(notifier_db, run_id)
    published: list[DailyReport] = []

    async def publish(report: DailyReport, run: str) -> None:
        published.append(report)

    def clock() -> ReportClock:
        return ReportClock(notifier_db, ReportSchedule(), None, publish, "KRW")

    first = clock()
    first.observe(run_id, at(2, 12, 59))
    assert await first.check() == []  # 21:59 KST: not yet
    first.observe(run_id, at(2, 13, 0))
    (report,) = await first.check()
    assert report.report_date == date(2026, 3, 2) and report.trades == 6
    first.observe(run_id, at(2, 14))
    assert await first.check() == []  # never twice
    restarted = clock()  # a restart or a second replica sees the same hour
    restarted.observe(run_id, at(2, 13, 30))
    assert await restarted.check() == []
    assert len(published) == 1


class Published:
    """The reports a clock published, with a switch to make the next publish fail (NATS down)."""

    def __init__(self) -> None:
        self.reports: list[DailyReport] = []
        self.failing = False

    async def __call__(self, report: DailyReport, run: str) -> None:
        if self.failing:
            raise TransientError("publish to reports.daily failed: nats: timeout")
        self.reports.append(report)

    def dates(self) -> list[int]:
        return [r.report_date.day for r in self.reports]


async def test_event_time_jumping_days_between_checks_reports_every_missed_day_in_order_once(
    notifier_db: Database, run_id: str
) -> None:
    """A replay at speed moves event time days past the grace between two checks: no day is skipped."""
    await trade(notifier_db, run_id)
    published = Published()

    def clock() -> ReportClock:
        return ReportClock(notifier_db, ReportSchedule(), None, published, "KRW")

    first = clock()
    first.observe(run_id, at(1, 9))
    assert await first.check() == []
    first.observe(run_id, at(5, 14))
    reports = await first.check()
    assert [r.report_date for r in reports] == [date(2026, 3, d) for d in (1, 2, 3, 4, 5)]
    assert [r.trades for r in reports] == [2, 6, 1, 0, 0]  # every fill in exactly one report
    first.observe(run_id, at(5, 15))  # redelivered or later events of the same day
    assert await first.check() == []
    restarted = clock()
    restarted.observe(run_id, at(5, 14))
    assert await restarted.check() == []
    restarted.observe(run_id, at(7, 13))
    assert [r.report_date.day for r in await restarted.check()] == [6, 7]
    assert published.dates() == [1, 2, 3, 4, 5, 6, 7]


async def test_a_restart_before_the_first_report_resumes_where_the_run_began(
    notifier_db: Database, run_id: str
) -> None:
    """The run's first boundary is recorded, so a restart that first sees a later day still reports
    the days before it."""
    published = Published()
    before = ReportClock(notifier_db, ReportSchedule(), None, published, "KRW")
    before.observe(run_id, at(1, 9))
    assert await before.check() == []
    after = ReportClock(notifier_db, ReportSchedule(), None, published, "KRW")
    after.observe(run_id, at(3, 14))  # beyond the grace of 03-01 and 03-02
    await after.check()
    assert published.dates() == [1, 2, 3]


async def test_a_failed_publish_is_retried_from_that_day_on_without_duplicates(
    notifier_db: Database, run_id: str
) -> None:
    published = Published()
    clock = ReportClock(notifier_db, ReportSchedule(), None, published, "KRW")
    clock.observe(run_id, at(1, 9))
    await clock.check()
    clock.observe(run_id, at(2, 14))
    published.failing = True
    with pytest.raises(TransientError):
        await clock.check()  # 03-01's publish fails: its claim is rolled back with it
    published.failing = False
    clock.observe(run_id, at(3, 13))
    await clock.check()
    assert published.dates() == [1, 2, 3]
