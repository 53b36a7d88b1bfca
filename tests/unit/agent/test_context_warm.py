"""Warming a run's context book from stored candles, on event time (BEHAVIOUR §5.2, rebuild).

The rule the distributed agent applies to ``market_data`` and the backtest to its own candles:
the hours with ``ts_open + 1h <= ts`` among the last ``keep``, any hour with at least one minute;
hours already in the book (from ``candles.1h``) win.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import HourlyCandle
from services.agent.context import Bar
from services.agent.core import ContextBook, has_holes, needs_warm, warm_bars, warm_book, warm_span
from tests.unit.agent.factories import HOUR, T0, bar, hourly_candle

MIN = timedelta(minutes=1)


def stored(hour: int, close: float, minutes: int = 60) -> HourlyCandle:
    """An hourly aggregate of stored 1m rows (``load_hourly_candles``)."""
    return hourly_candle(bar(hour, close)).model_copy(update={"minute_count": minutes})


@pytest.mark.parametrize(
    ("ts", "keep", "span"),
    [
        pytest.param(T0 + 10 * HOUR + 5 * MIN, 3, (T0 + 7 * HOUR, T0 + 10 * HOUR), id="mid-hour"),
        pytest.param(T0 + 10 * HOUR, 3, (T0 + 7 * HOUR, T0 + 10 * HOUR), id="on-the-hour"),
        pytest.param(T0 + 10 * HOUR - MIN, 2, (T0 + 7 * HOUR, T0 + 9 * HOUR), id="a-minute-before"),
    ],
)
def test_warm_span_is_the_last_keep_whole_hours_before_the_event_hour(
    ts: datetime, keep: int, span: tuple[datetime, datetime]
) -> None:
    assert warm_span(ts, keep) == span


def test_warm_bars_keep_only_hours_closed_by_event_time_within_keep_hours() -> None:
    candles = [stored(h, 100 + h) for h in range(12)]  # hours 0..11 stored
    bars = warm_bars(candles, T0 + 10 * HOUR + 30 * MIN, keep=4)
    assert [b.ts_open for b in bars] == [T0 + h * HOUR for h in (6, 7, 8, 9)]
    assert bars[-1] == Bar.of(candles[9])


def test_warm_bars_count_an_hour_with_missing_minutes_and_skip_hours_without_any() -> None:
    candles = [stored(7, 107.0), stored(8, 108.0, minutes=3), stored(10, 110.0)]  # hour 9: no rows
    bars = warm_bars(candles, T0 + 11 * HOUR, keep=48)
    assert [b.ts_open for b in bars] == [T0 + 7 * HOUR, T0 + 8 * HOUR, T0 + 10 * HOUR]


def test_warm_bars_order_the_hours_whatever_order_they_come_in() -> None:
    bars = warm_bars([stored(3, 3.0), stored(1, 1.0), stored(2, 2.0)], T0 + 4 * HOUR, keep=48)
    assert [b.close for b in bars] == [1.0, 2.0, 3.0]


def test_warm_book_keeps_hours_already_in_the_book() -> None:
    arrived = bar(5, 555.0)
    book = ContextBook().with_bar("KRW-BTC", arrived)
    warmed = warm_book(book, "KRW-BTC", [bar(h, 100.0 + h) for h in range(3, 6)])
    assert warmed.bars["KRW-BTC"] == (bar(3, 103.0), bar(4, 104.0), arrived)


def test_warm_book_keeps_the_newest_keep_hours_and_leaves_other_symbols_alone() -> None:
    eth = ContextBook().with_bar("KRW-ETH", bar(0, 1.0))
    warmed = warm_book(eth, "KRW-BTC", [bar(h, 1.0) for h in range(10)], keep=4)
    assert [b.ts_open for b in warmed.bars["KRW-BTC"]] == [T0 + h * HOUR for h in (6, 7, 8, 9)]
    assert warmed.bars["KRW-ETH"] == eth.bars["KRW-ETH"]


def test_warm_book_with_nothing_stored_leaves_the_book_as_it_was() -> None:
    book = ContextBook().with_bar("KRW-BTC", bar(1, 1.0))
    assert warm_book(book, "KRW-BTC", ()) == book


@pytest.mark.parametrize(
    ("book", "symbol", "expected"),
    [
        pytest.param(ContextBook(), "KRW-BTC", True, id="empty-book"),
        pytest.param(ContextBook().with_bar("KRW-ETH", bar(0, 1.0)), "KRW-BTC", True, id="other-symbol-only"),
        pytest.param(ContextBook().with_bar("KRW-BTC", bar(0, 1.0)), "KRW-BTC", False, id="has-bars"),
        pytest.param(ContextBook({"KRW-BTC": ()}), "KRW-BTC", True, id="warmed-with-nothing"),
    ],
)
def test_a_book_needs_warming_until_it_has_bars_for_the_symbol(
    book: ContextBook, symbol: str, expected: bool
) -> None:
    assert needs_warm(book, symbol) is expected


def test_warmed_bars_equal_the_bars_candles_1h_would_bring() -> None:
    """Same Decimal aggregate in, same floats out: a warmed hour and a delivered hour are one bar."""
    candle = hourly_candle(bar(2, 101.25, volume=0.1))
    summed = candle.model_copy(update={"volume": Decimal("0.10000000")})  # NUMERIC scale from SQL
    assert warm_bars([summed], T0 + 3 * HOUR, keep=48) == (Bar.of(candle),)


def book_of(*hours: int) -> ContextBook:
    return ContextBook({"KRW-BTC": tuple(bar(h, 100.0 + h) for h in hours)})


@pytest.mark.parametrize(
    ("book", "holes"),
    [
        pytest.param(book_of(6, 7, 8, 9), False, id="whole"),
        pytest.param(book_of(5, 6, 7, 8, 9, 10), False, id="whole-with-hours-outside-the-span"),
        pytest.param(book_of(6, 8, 9), True, id="a-replica-missed-hour-7"),
        pytest.param(book_of(6, 7, 8), True, id="the-last-closed-hour-missing"),
        pytest.param(ContextBook(), True, id="empty"),
    ],
)
def test_has_holes_when_the_book_lacks_an_hour_of_the_warm_span(book: ContextBook, holes: bool) -> None:
    assert has_holes(book, "KRW-BTC", T0 + 10 * HOUR + 30 * MIN, keep=4) is holes
