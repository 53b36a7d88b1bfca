"""The collector's pure decisions: Upbit mapping (§1.2, §13.3 N), closed candles, polls, backfill pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from coinpilot.contracts import MinuteCandle
from coinpilot.errors import PermanentError
from services.collector.core import (
    Page,
    StoredRange,
    Take,
    backfill_start,
    closed_after,
    decode_json,
    format_to,
    page_outcome,
    parse_candle,
    parse_candles,
    poll_count,
    take_plan,
)

D = Decimal
T = datetime(2026, 3, 1, 12, 34, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

# §13.3 N, with the fields Upbit sends and the mapping ignores.
ELEMENT = (
    '{"market":"KRW-BTC","candle_date_time_utc":"2026-03-01T12:34:00","candle_date_time_kst":"2026-03-01T21:34:00",'
    '"opening_price":95000000.0,"high_price":95100000.0,"low_price":94900000.0,"trade_price":95050000.0,'
    '"timestamp":1772368499123,"candle_acc_trade_price":117345678.12345,"candle_acc_trade_volume":1.23456789,'
    '"unit":1}'
)


def element(**changes: Any) -> dict[str, Any]:
    data = decode_json(ELEMENT.encode())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


def candle(minute: int, close: str = "100") -> MinuteCandle:
    start = T + minute * MINUTE
    c = D(close)
    return MinuteCandle(
        symbol="KRW-BTC", ts_open=start, ts_event=start + MINUTE, open=c, high=c, low=c, close=c, volume=D(1)
    )


def test_case_n_maps_an_upbit_element_to_one_candle_row() -> None:
    row = parse_candle(decode_json(ELEMENT.encode()), "KRW-BTC")
    assert (row.symbol, row.open, row.high, row.low, row.close, row.volume, row.ts_open) == (
        "KRW-BTC",
        D("95000000"),
        D("95100000"),
        D("94900000"),
        D("95050000"),
        D("1.23456789"),
        T,
    )
    assert row.ts_event == T + MINUTE


def test_numbers_are_taken_exactly_as_sent_never_through_a_float() -> None:
    text = ELEMENT.replace("1.23456789", "0.10000000000000001")
    assert parse_candle(decode_json(text.encode()), "KRW-BTC").volume == D("0.10000000000000001")


def test_a_response_is_returned_oldest_first() -> None:
    later = element(candle_date_time_utc="2026-03-01T12:35:00")
    candles = parse_candles([later, element()], "KRW-BTC")
    assert [c.ts_open for c in candles] == [T, T + MINUTE]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param({"error": {"name": "x"}}, "not an array", id="an-object-instead-of-an-array"),
        pytest.param(["x"], "not an object", id="an-element-that-is-not-an-object"),
        pytest.param([element(trade_price=None)], "missing trade_price", id="a-missing-field"),
        pytest.param([element(high_price="95100000")], "high_price is '95100000'", id="a-price-as-text"),
        pytest.param([element(low_price=True)], "low_price is True", id="a-boolean-price"),
        pytest.param([element(market="KRW-ETH")], "answered market 'KRW-ETH'", id="another-market"),
        pytest.param([element(unit=3)], "unit 3", id="another-unit"),
        pytest.param(
            [element(candle_date_time_utc="2026-03-01 12:34")], "candle_date_time_utc", id="bad-time"
        ),
        pytest.param(
            [element(candle_date_time_utc="2026-03-01T12:34:30")], "not a minute start", id="mid-minute"
        ),
        pytest.param([element(high_price=D("94000000"))], "OHLC out of order", id="high-below-the-close"),
        pytest.param([element(candle_acc_trade_volume=D(-1))], "volume must be >= 0", id="negative-volume"),
        pytest.param([element(), element()], "two candles", id="the-same-minute-twice"),
        pytest.param(
            [element(opening_price=0, low_price=0)], "implausible .*: POSITIVE_PRICE", id="a-zero-price"
        ),
    ],
)
def test_a_malformed_payload_is_a_permanent_error_that_says_why(payload: object, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        parse_candles(payload, "KRW-BTC")


def test_a_body_that_is_not_json_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="not JSON"):
        decode_json(b'[{"market":')


@pytest.mark.parametrize(
    ("now", "after", "expected"),
    [
        pytest.param(T + 3 * MINUTE, None, [0, 1, 2], id="the-forming-minute-is-not-closed"),
        pytest.param(T + 2 * MINUTE + timedelta(seconds=59), None, [0, 1], id="one-second-before-the-close"),
        pytest.param(T + 3 * MINUTE, T + MINUTE, [2], id="only-after-the-last-published"),
        pytest.param(T + 3 * MINUTE, T + 2 * MINUTE, [], id="nothing-new"),
    ],
)
def test_closed_after(now: datetime, after: datetime | None, expected: list[int]) -> None:
    candles = [candle(3), candle(2), candle(1), candle(0)]  # newest first, as Upbit sends them
    assert closed_after(candles, now, after) == [candle(m) for m in expected]


@pytest.mark.parametrize(
    ("now", "last", "expected"),
    [
        pytest.param(T + MINUTE + timedelta(seconds=2), T - MINUTE, 3, id="steady-state-asks-for-3"),
        pytest.param(T + timedelta(minutes=10, seconds=2), T - MINUTE, 12, id="after-a-pause-asks-for-more"),
        pytest.param(T + timedelta(hours=10), T, 200, id="never-more-than-200"),
        pytest.param(T, None, 3, id="nothing-published-yet"),
    ],
)
def test_poll_count(now: datetime, last: datetime | None, expected: int) -> None:
    assert poll_count(now, last) == expected


LOOKBACK = timedelta(minutes=13_200)
NOW = datetime(2026, 3, 10, 0, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(StoredRange(), NOW - LOOKBACK, id="no-history-takes-the-whole-lookback"),
        pytest.param(
            StoredRange(NOW - timedelta(hours=50), NOW - timedelta(hours=1)),
            NOW - LOOKBACK,
            id="short-history-refetches-the-lookback",
        ),
        pytest.param(
            StoredRange(NOW - LOOKBACK + timedelta(minutes=30), NOW - timedelta(hours=1)),
            NOW - timedelta(hours=1),
            id="history-from-within-an-hour-of-the-lookback-counts-as-full",
        ),
        pytest.param(
            StoredRange(NOW - timedelta(days=30), NOW - timedelta(hours=3)),
            NOW - timedelta(hours=3),
            id="long-history-continues-from-the-newest",
        ),
        pytest.param(
            StoredRange(NOW - timedelta(days=60), NOW - timedelta(days=20)),
            NOW - LOOKBACK,
            id="a-downtime-longer-than-the-lookback-is-bounded",
        ),
    ],
)
def test_backfill_start(stored: StoredRange, expected: datetime) -> None:
    assert backfill_start(stored, NOW, LOOKBACK) == expected


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(
            StoredRange(NOW - timedelta(days=30), NOW - timedelta(minutes=4)),
            Take(None, NOW - timedelta(minutes=3), NOW - timedelta(minutes=4)),
            id="a-takeover-gap-is-polled-and-published-not-backfilled",
        ),
        pytest.param(
            StoredRange(NOW - timedelta(hours=50), NOW - timedelta(minutes=4)),
            Take(NOW - LOOKBACK, NOW - timedelta(minutes=3), NOW - timedelta(minutes=4)),
            id="a-short-history-is-backfilled-only-up-to-the-newest",
        ),
        pytest.param(
            StoredRange(NOW - timedelta(days=30), NOW - timedelta(minutes=60)),
            Take(None, NOW - timedelta(minutes=59), NOW - timedelta(minutes=60)),
            id="an-hour-back-still-resumes-there",
        ),
        pytest.param(
            StoredRange(NOW - timedelta(days=30), NOW - timedelta(minutes=61)),
            Take(NOW - timedelta(minutes=61), NOW, None),
            id="older-is-backfilled-and-stored-only-as-at-start-up",
        ),
        pytest.param(StoredRange(), Take(NOW - LOOKBACK, NOW, None), id="nothing-stored-takes-the-lookback"),
    ],
)
def test_take_plan(stored: StoredRange, expected: Take) -> None:
    assert take_plan(stored, NOW, LOOKBACK) == expected


@pytest.mark.parametrize(
    ("minutes", "requested", "start", "now", "expected"),
    [
        pytest.param(
            [5, 4, 3],
            3,
            T,
            T + 5 * MINUTE,
            Page((candle(3), candle(4)), T + 3 * MINUTE),
            id="full-page-continues-before-its-oldest-without-the-forming-one",
        ),
        pytest.param(
            [5, 4, 3],
            4,
            T,
            T + 9 * MINUTE,
            Page((candle(3), candle(4), candle(5)), None),
            id="a-short-page-is-the-start-of-history",
        ),
        pytest.param(
            [2, 1, 0],
            3,
            T + MINUTE,
            T + 9 * MINUTE,
            Page((candle(2),), None),
            id="reaching-the-start-ends-and-keeps-only-later-candles",
        ),
        pytest.param([], 200, T, T + 9 * MINUTE, Page((), None), id="an-empty-page-ends"),
    ],
)
def test_page_outcome(
    minutes: list[int], requested: int, start: datetime, now: datetime, expected: Page
) -> None:
    page = page_outcome([candle(m) for m in minutes][::-1], requested, start=start, now=now)
    assert page == expected


def test_to_is_sent_as_utc_with_a_z() -> None:
    assert format_to(datetime(2026, 3, 1, 21, 34, 5, 123456, tzinfo=UTC)) == "2026-03-01T21:34:05Z"
    assert json.dumps(format_to(T)) == '"2026-03-01T12:34:00Z"'
