"""The backtest on real candles: it trades, it is deterministic, and its report adds up.

The window is the bundled sample (BTC and ETH, March 2023): the engine warms the indicator on
the first ~9 days and trades the rest. The report's figures are recomputed here independently
from the trades and the equity curve, with plain arithmetic.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from decimal import Decimal

import pytest

from apps.backtest.report import build_report, html_page, round_trips
from apps.backtest.run import run_backtest, split_window
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Side


@pytest.fixture(scope="module")
def window():
    return split_window(load_candles(sample_files()), None, None)


@pytest.fixture(scope="module")
async def outcome(window):
    return await run_backtest(window, label="sample")


def test_the_sample_warms_up_before_trading(window) -> None:
    assert window.warmup and window.trade
    assert (window.trade[0].ts_open - window.warmup[0].ts_open).total_seconds() >= 200 * 3600


def test_the_sample_window_really_trades(outcome) -> None:
    result, report = outcome
    sides = Counter(f.side for f in result.fills)
    assert sides[Side.BUY] >= 3 and sides[Side.SELL] >= 2
    assert len({t.exit_reason for t in report.trips}) >= 2  # several exit reasons
    assert result.counters.snapshots == result.counters.candles


async def test_two_runs_over_the_same_candles_book_the_same_ledger(window, outcome) -> None:
    again, _ = await run_backtest(window, label="again")
    first, _ = outcome
    assert [f.to_json() for f in again.fills] == [f.to_json() for f in first.fills]
    assert [d.to_json() for d in again.decisions] == [d.to_json() for d in first.decisions]


async def test_the_batch_indicator_path_books_the_same_ledger_as_the_live_path(window, outcome) -> None:
    live, _ = await run_backtest(window, label="live", path="live")
    batch, _ = outcome
    assert [f.to_json() for f in live.fills] == [f.to_json() for f in batch.fills]
    assert [p.equity for p in live.equity] == [p.equity for p in batch.equity]


def test_report_figures_agree_with_an_independent_computation(outcome) -> None:
    result, report = outcome
    fills = result.fills
    # cash: every BUY costs amount + fee, every SELL returns amount - fee
    cash = result.initial_balance
    for f in fills:
        cash += -(f.amount + f.fee) if f.side is Side.BUY else f.amount - f.fee
    assert cash == fills[-1].balance_after
    # net pnl of closed trades from the pairs of fills
    buys = {}
    pnls = []
    for f in fills:
        if f.side is Side.BUY:
            buys[f.symbol] = f
        else:
            b = buys.pop(f.symbol)
            pnls.append((f.amount - f.fee) - (b.amount + b.fee))
    assert [t.pnl for t in report.trips] == pnls
    assert report.win_rate == sum(p > 0 for p in pnls) / len(pnls)
    gains, losses = sum(p for p in pnls if p > 0), -sum(p for p in pnls if p < 0)
    assert report.profit_factor == pytest.approx(float(gains / losses))
    assert report.fees == sum(f.fee for f in fills)
    curve = [float(result.initial_balance)] + [float(p.equity) for p in result.equity]
    peak, worst = curve[0], 0.0
    for x in curve:
        peak = max(peak, x)
        worst = max(worst, (peak - x) / peak)
    assert report.mdd_pct == pytest.approx(worst * 100)
    assert report.total_return_pct == pytest.approx((curve[-1] / curve[0] - 1) * 100)
    rets = [b / a - 1 for a, b in itertools.pairwise(curve)]
    mean = sum(rets) / len(rets)
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
    assert report.sharpe_raw == pytest.approx(mean / std)
    assert report.sharpe_annualised == pytest.approx(mean / std * math.sqrt(8760))
    by_reason = Counter(t.exit_reason for t in report.trips)
    assert {k: v[0] for k, v in report.by_exit_reason.items()} == dict(by_reason)


def test_the_html_report_is_self_contained(outcome) -> None:
    _, report = outcome
    page = html_page([report], b"\x89PNG fake")
    assert "data:image/png;base64," in page and "<table>" in page and "http" not in page.split("<img")[0]


def test_round_trips_pair_each_sell_with_its_buy(outcome) -> None:
    result, _ = outcome
    trips = round_trips(result.fills)
    assert len(trips) == sum(f.side is Side.SELL for f in result.fills)
    assert all(t.closed_at >= t.opened_at for t in trips)
    assert all(isinstance(t.pnl, Decimal) for t in trips)


def test_a_report_without_trades_has_neutral_figures() -> None:
    report = build_report("empty", [], [], initial_equity=Decimal(100), currency="KRW", candles=0)
    assert report.total_return_pct == 0.0 and report.mdd_pct == 0.0 and report.profit_factor is None
