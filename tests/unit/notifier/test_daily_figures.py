"""Daily report figures on a known day of trades spanning midnight UTC (§8, rebuild)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from coinpilot.contracts import Side
from services.notifier.daily_figures import (
    ExitBucket,
    TradeRow,
    basic_summary,
    compute_daily,
    fifo_entry_prices,
    summary_prompt,
)

D = Decimal
START = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)  # 22:00 KST on 03-01
END = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # 22:00 KST on 03-02


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def row(
    oid, sym, side, price, qty, fee, when, balance, pos_after, entry=None, reason=None, post=None
) -> TradeRow:
    return TradeRow(
        order_id=oid,
        symbol=sym,
        side=side,
        price=D(price),
        quantity=D(qty),
        fee=D(fee),
        executed_at=when,
        balance_after=D(balance),
        position_quantity_after=D(pos_after),
        entry_avg_price=None if entry is None else D(entry),
        exit_reason=reason,
        post_1h_change_pct=post,
    )


BUY, SELL = Side.BUY, Side.SELL
# Initial cash 10,000,000; fee 0.05 % per side; amounts = price × qty.
DAY = [
    # before the window
    row("eth-buy", "KRW-ETH", BUY, "3000000", "1", "1500", at(1, 10), "6998500", "1"),
    row("btc-buy", "KRW-BTC", BUY, "100000000", "0.01", "500", at(1, 12, 59), "5998000", "0.01"),
    # the window [03-01 13:00, 03-02 13:00)
    # +10,000 gross − 505 fee = +9,495
    row(
        "btc-sell",
        "KRW-BTC",
        SELL,
        "101000000",
        "0.01",
        "505",
        at(1, 13),
        "7007495",
        "0",
        "100000000",
        "TAKE_PROFIT",
    ),
    row("xrp-buy", "KRW-XRP", BUY, "1000", "1000", "500", at(1, 20), "6006995", "1000"),
    # −100,000 − 1,450 = −101,450 (−3.3333 %)
    row(
        "eth-sell",
        "KRW-ETH",
        SELL,
        "2900000",
        "1",
        "1450",
        at(1, 23, 30),
        "8905545",
        "0",
        "3000000",
        "STOP_LOSS",
    ),
    # after midnight UTC: −10,000 − 495 = −10,495 (−1 %)
    row("xrp-sell", "KRW-XRP", SELL, "990", "1000", "495", at(2, 0, 30), "9895050", "0", "1000", "STOP_LOSS"),
    row("sol-buy", "KRW-SOL", BUY, "200000", "10", "1000", at(2, 3), "7894050", "10"),
    # no entry_avg_price: FIFO gives 200,000; +100,000 − 1,050 = +98,950 (+5 %)
    row(
        "sol-sell",
        "KRW-SOL",
        SELL,
        "210000",
        "10",
        "1050",
        at(2, 12, 59),
        "9993000",
        "0",
        None,
        "TAKE_PROFIT",
        0.5,
    ),
    # after the window (next report)
    row("btc-buy-2", "KRW-BTC", BUY, "100000000", "0.01", "500", at(2, 13), "8992500", "0.01"),
]


def test_every_trade_in_the_window_is_counted_once_with_hand_computed_figures() -> None:
    figures = compute_daily(DAY, START, END, "KRW", D("10000000"))
    assert (figures.trades, figures.sell_trades) == (6, 4)
    assert figures.total_pnl == D("9495") - D("101450") - D("10495") + D("98950") == D("-3500")
    assert figures.win_rate == 0.5
    assert figures.fees_paid == D("5000")
    assert figures.end_balance == D("9993000")
    # equity = cash + positions at their last fill price, at the start and after each fill
    assert figures.equity_curve == tuple(
        D(x) for x in ("9998000", "10007495", "10006995", "9905545", "9895050", "9894050", "9993000")
    )
    assert figures.mdd_pct == pytest.approx((10_007_495 - 9_894_050) / 10_007_495 * 100)
    assert figures.loss_ratio_pct == pytest.approx(3_500 / 9_993_000 * 100)
    assert figures.exit_breakdown == {
        "STOP_LOSS": ExitBucket(count=2, avg_pnl_pct=-2.1667, avg_post_1h_pct=None),
        "TAKE_PROFIT": ExitBucket(count=2, avg_pnl_pct=3.0, avg_post_1h_pct=0.5),
    }
    assert figures.notes == ("Fees paid: 5000 KRW",)


def test_adjacent_reports_share_no_trade() -> None:
    previous = compute_daily(DAY, datetime(2026, 2, 28, 13, tzinfo=UTC), START, "KRW", D("10000000"))
    following = compute_daily(DAY, END, datetime(2026, 3, 3, 13, tzinfo=UTC), "KRW", D("10000000"))
    current = compute_daily(DAY, START, END, "KRW", D("10000000"))
    assert previous.trades + current.trades + following.trades == len(DAY)


def test_an_empty_window_says_so_and_has_no_win_rate() -> None:
    figures = compute_daily([], START, END, "KRW", D("10000000"))
    assert (figures.trades, figures.win_rate, figures.mdd_pct, figures.total_pnl) == (0, None, 0.0, 0)
    assert figures.equity_curve == (D("10000000"),)
    assert figures.notes == ("No trades in the window",)


def test_a_sell_without_any_entry_price_is_excluded_with_a_note() -> None:
    orphan = row("x", "KRW-DOGE", SELL, "200", "10", "1", at(2, 1), "10001999", "0", None, "TIME_LIMIT")
    figures = compute_daily([orphan], START, END, "KRW", D("10000000"))
    assert figures.sell_trades == 0 and figures.win_rate is None
    assert figures.notes == (
        "KRW-DOGE: SELL excluded from PnL (no entry price)",
        "There were SELLs but none could be priced (no entry price)",
        "Fees paid: 1 KRW",
    )


def test_fifo_uses_all_earlier_lots_and_every_sell_consumes_its_own() -> None:
    history = [
        row("b1", "KRW-BTC", BUY, "100", "1", "0", at(1, 1), "0", "1"),
        row("b2", "KRW-BTC", BUY, "200", "1", "0", at(1, 2), "0", "2"),
        row("s1", "KRW-BTC", SELL, "150", "1", "0", at(1, 3), "0", "1", entry="100"),  # consumes b1
        row("b3", "KRW-BTC", BUY, "300", "1", "0", at(1, 4), "0", "2"),
        # takes b2 (1 @ 200) and half of b3 (0.5 @ 300): 350 / 1.5
        row("s2", "KRW-BTC", SELL, "250", "1.5", "0", at(1, 5), "0", "0.5"),
        row("s3", "KRW-BTC", SELL, "250", "0.5", "0", at(1, 6), "0", "0"),
    ]
    assert fifo_entry_prices(history) == {"s2": D("233.33333333"), "s3": D("300")}


def test_fallback_summary_and_prompt_carry_the_numbers() -> None:
    figures = compute_daily(DAY, START, END, "KRW", D("10000000"))
    assert basic_summary(figures) == (
        "Basic summary: trades=6, sells=4, win_rate=50.0%, total_pnl=-3,500 KRW, mdd=1.13%"
    )
    prompt = summary_prompt(figures, "2026-03-02")
    assert "win rate: 50.0%" in prompt
    assert "- STOP_LOSS: count 2, avg pnl -2.17%, avg 1h after exit N/A" in prompt
    assert "data-quality notes: Fees paid: 5000 KRW" in prompt
