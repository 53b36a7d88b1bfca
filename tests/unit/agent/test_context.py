"""Market context and its features (BEHAVIOUR §5.2, §5.3; acceptance cases I and J)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.agent.context import (
    Bar,
    BearFeatures,
    Direction,
    MinuteRow,
    PatternFeatures,
    bear_features,
    market_context,
    pattern_features,
    resample_hourly,
)
from tests.unit.agent.factories import T0, bar, bars_from_closes

CASE_I = bars_from_closes([100, 99, 98, 97, 96, 95, 95, 96, 97, 98], [10, 12, 11, 10, 9, 8, 8, 9, 10, 14])


def test_bear_features_of_case_i_match_the_spec() -> None:
    assert bear_features(CASE_I) == BearFeatures(0.4286, 3.1579, 1.5077)


@pytest.mark.parametrize(
    ("bars", "expected"),
    [
        pytest.param((), BearFeatures(), id="no-bars-default"),
        pytest.param(bars_from_closes([100]), BearFeatures(), id="one-bar-default"),
        pytest.param(
            bars_from_closes([100, 100]), BearFeatures(0.0, 0.0, 1.0), id="flat-pair-zero-diff-not-negative"
        ),
        pytest.param(
            bars_from_closes([100, 90], [0, 5]), BearFeatures(1.0, 0.0, 1.0), id="zero-mean-volume-gives-1"
        ),
    ],
)
def test_bear_features_edges(bars: tuple[Bar, ...], expected: BearFeatures) -> None:
    assert bear_features(bars) == expected


def test_context_of_four_has_four_elements_with_iso_string_timestamps() -> None:
    context = market_context(CASE_I, limit=4)
    assert [c["timestamp"] for c in context] == [
        "2026-02-18T06:00:00+00:00",
        "2026-02-18T07:00:00+00:00",
        "2026-02-18T08:00:00+00:00",
        "2026-02-18T09:00:00+00:00",
    ]
    assert context[-1] == {
        "timestamp": "2026-02-18T09:00:00+00:00",
        "open": 98.0,
        "high": 99.0,
        "low": 97.0,
        "close": 98.0,
        "volume": 14.0,
    }


CASE_J = (
    bar(0, 102, open_=100, high=103, low=99),
    bar(1, 103, open_=102, high=104, low=101),
    bar(2, 105, open_=103, high=106, low=102),
    bar(3, 106, open_=105, high=107, low=104),
    bar(4, 107, open_=106, high=108, low=105),
    bar(5, 108, open_=107, high=109, low=106),
)


def test_pattern_features_of_case_j_match_the_spec() -> None:
    assert pattern_features(CASE_J) == PatternFeatures(
        pattern_direction=Direction.UP,
        net_change_pct_6h=5.8824,
        bearish_streak_6h=0,
        bullish_streak_6h=6,
        last_body_to_range_ratio=0.3333,
        last_upper_wick_ratio=0.3333,
        last_lower_wick_ratio=0.3333,
        range_expansion_ratio_6h=0.8824,
    )


@pytest.mark.parametrize(
    ("opens_closes", "bearish", "bullish"),
    [
        # newest last; the walk goes backwards from the newest
        pytest.param(
            [(100, 101), (101, 100), (100, 99), (99, 98)], 3, 1, id="flip-candle-counted-once-then-stop"
        ),
        pytest.param([(100, 99), (99, 99), (99, 100), (100, 101)], 0, 2, id="doji-stops-the-walk"),
        pytest.param([(100, 100), (100, 100)], 0, 0, id="newest-doji-counts-nothing"),
        pytest.param([(105, 104), (104, 103), (103, 102)], 3, 0, id="all-bearish"),
    ],
)
def test_streaks_walk_back_from_the_newest_candle(
    opens_closes: list[tuple[float, float]], bearish: int, bullish: int
) -> None:
    bars = tuple(bar(i, c, open_=o) for i, (o, c) in enumerate(opens_closes))
    features = pattern_features(bars)
    assert (features.bearish_streak_6h, features.bullish_streak_6h) == (bearish, bullish)


def test_pattern_features_with_fewer_than_two_usable_candles_are_defaults() -> None:
    nan_bar = Bar(T0, float("nan"), 1.0, 1.0, 1.0, 1.0)
    assert pattern_features((bar(0, 100), nan_bar)) == PatternFeatures()


def test_pattern_direction_is_flat_within_two_tenths_of_a_percent() -> None:
    assert pattern_features(bars_from_closes([100, 100.2])).pattern_direction is Direction.FLAT
    assert pattern_features(bars_from_closes([100, 99.7])).pattern_direction is Direction.DOWN


def test_resampling_case_d_groups_by_hour_closed_left() -> None:
    start = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    rows = [MinuteRow(start + timedelta(minutes=i), i, i, i, i, 1) for i in range(120)]
    bars = resample_hourly(rows)
    assert [(b.ts_open.hour, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
        (0, 0, 29, 0, 29, 30),
        (1, 30, 89, 30, 89, 60),
        (2, 90, 119, 90, 119, 30),
    ]


def test_resampling_drops_the_hour_still_forming() -> None:
    start = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    rows = [MinuteRow(start + timedelta(minutes=i), i, i, i, i, 1) for i in range(120)]
    closed = resample_hourly(rows, closed_before=datetime(2026, 1, 1, 2, 30, tzinfo=UTC))
    assert [b.ts_open.hour for b in closed] == [0, 1]
