"""Equity marks rebuilt from a ledger and its candles are the engine's marks (backtest.marks).

A hand-checked case with two overlapping positions, then the whole bundled sample: the marks
rebuilt from the backtest's own fills and traded candles equal the marks its engine made, and so
does every figure of the report built from them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.backtest.ledger_report import RunLedger, run_report
from apps.backtest.marks import Holding, MinuteClose, ledger_marks, open_positions
from apps.backtest.report import EquityPoint, build_report
from apps.backtest.run import run_backtest, split_window
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.contracts import ExitReason, Fill, Regime, Side

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BTC, ETH = "KRW-BTC", "KRW-ETH"
D = Decimal


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def close(minute: int, symbol: str, price: int) -> MinuteClose:
    """The candle opened at ``minute`` (its event time is one minute later)."""
    return MinuteClose(at(minute), symbol, D(price))


def fill(event_minute: int, symbol: str, side: Side, qty: int, price: int, balance_after: int) -> Fill:
    amount = D(qty * price)
    held = D(0) if side is Side.SELL else D(qty)
    return Fill(
        ts_event=at(event_minute), order_id=f"{symbol}-{event_minute}", symbol=symbol, side=side,
        currency="KRW", decision_price=D(price), fill_price=D(price), quantity=D(qty), amount=amount,
        fee=D(1), balance_after=D(balance_after), position_quantity_after=held,
        position_avg_price_after=D(price) if held else D(0),
        realized_pnl=None, entry_avg_price=None, regime=Regime.BULL,
        exit_reason=ExitReason.TAKE_PROFIT if side is Side.SELL else None,
        high_water_mark=D(price), opened_at=at(event_minute),
    )  # fmt: skip


# Two overlapping positions, cash 1000 before the first fill (fees of 1 on every fill):
#   00:58 open (event 00:59)  BTC 100  BUY 2 BTC @100 -> cash 799    mark 799 + 2*100        =  999
#                             ETH 10
#   00:59 open (event 01:00)  BTC 110                                mark 799 + 2*110        = 1019
#                             ETH 10   BUY 10 ETH @10 -> cash 698    (after the mark: ETH > BTC)
#   01:59 open (event 02:00)  BTC 90                                 mark 698 + 2*90 + 10*10 =  978
#                             ETH 12
#   02:29 open (event 02:30)  BTC 120  SELL 2 BTC @120 -> cash 937
#                             ETH 13                          final mark 937 + 10*13         = 1067
CLOSES = [
    close(58, BTC, 100), close(58, ETH, 10), close(59, BTC, 110), close(59, ETH, 10),
    close(119, BTC, 90), close(119, ETH, 12), close(149, BTC, 120), close(149, ETH, 13),
]  # fmt: skip
FILLS = [
    fill(59, BTC, Side.BUY, 2, 100, 799),
    fill(60, ETH, Side.BUY, 10, 10, 698),
    fill(150, BTC, Side.SELL, 2, 120, 937),
]


def test_marks_value_every_open_position_at_its_last_close() -> None:
    marks = ledger_marks(FILLS, CLOSES, D(1000))
    assert marks.equity == [
        EquityPoint(at(59), D(999), True),
        EquityPoint(at(60), D(1019), True),
        EquityPoint(at(120), D(978), True),
        EquityPoint(at(150), D(1067), True),
    ]
    assert marks.cash == D(937) and marks.final_equity == D(1067)
    assert marks.positions == {ETH: Holding(D(10), D(10))}
    assert marks.closes == {BTC: D(120), ETH: D(13)}


def test_marks_do_not_depend_on_the_order_fills_and_candles_come_in() -> None:
    assert ledger_marks(FILLS[::-1], CLOSES[::-1], D(1000)) == ledger_marks(FILLS, CLOSES, D(1000))


def test_the_report_of_the_hand_checked_marks() -> None:
    marks = ledger_marks(FILLS, CLOSES, D(1000))
    report = build_report("hand", FILLS, marks.equity, initial_equity=D(1000), currency="KRW", candles=8)
    assert report.total_return_pct == pytest.approx(6.7)
    assert report.mdd_pct == pytest.approx((1019 - 978) / 1019 * 100)  # 1000, 999, 1019, 978, 1067
    assert report.exposure_pct == 100.0
    assert [t.pnl for t in report.trips] == [D(38)]  # (240 - 1) - (200 + 1)
    assert report.by_exit_reason == {"TAKE_PROFIT": (1, D(38))}


def test_a_position_without_a_candle_yet_is_marked_at_its_average_price() -> None:
    marks = ledger_marks([fill(59, BTC, Side.BUY, 2, 100, 799)], [close(58, ETH, 10)], D(1000))
    assert marks.equity == [EquityPoint(at(59), D(999), True), EquityPoint(at(59), D(999), True)]


def test_before_its_first_fill_a_run_is_worth_its_starting_cash() -> None:
    marks = ledger_marks([], CLOSES[:4], D(1000))
    assert marks.equity == [EquityPoint(at(59), D(1000), False), EquityPoint(at(60), D(1000), False),
                            EquityPoint(at(60), D(1000), False)]  # fmt: skip


def test_open_positions_are_what_each_symbols_last_fill_left() -> None:
    assert open_positions(FILLS) == {ETH: Holding(D(10), D(10))}
    assert open_positions(FILLS[:2]) == {BTC: Holding(D(2), D(100)), ETH: Holding(D(10), D(10))}


def test_a_run_without_fills_reports_its_default_starting_cash() -> None:
    run = RunLedger("quiet", [], {}, CLOSES)
    report, marks = run_report(run, "quiet", D(5000))
    assert report.initial_equity == report.final_equity == D(5000)
    assert report.total_return_pct == 0.0 and report.exposure_pct == 0.0 and report.candles == 8
    assert marks.positions == {}


@pytest.fixture(scope="module")
async def sample_run():
    window = split_window(load_candles(sample_files()), None, None)
    result, report = await run_backtest(window, label="sample")
    return window, result, report


async def test_marks_rebuilt_from_the_backtests_ledger_are_its_engines_marks(sample_run) -> None:
    window, result, report = sample_run
    assert len(result.fills) >= 4 and len(open_positions(result.fills[:1])) == 1
    closes = [MinuteClose(c.ts_open, c.symbol, c.close) for c in window.trade]
    marks = ledger_marks(result.fills, closes, result.initial_balance)
    assert marks.equity == result.equity

    run = RunLedger("sample", result.fills, {result.currency: result.initial_balance}, closes)
    rebuilt, _ = run_report(run, "sample", D(0))
    assert replace(rebuilt, chart_renderer=None) == replace(report, chart_renderer=None)
    assert rebuilt.summary_lines() == report.summary_lines()
