"""Pre-filter behaviour on a slice of real candles (BTC/USDT 1m, 2025-05-22 06:00 to 05-23 07:00 UTC).

The hours are resampled from the bundled 1m file the way the agent warms its context; each order
time sees only the hours closed by then.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coinpilot.candle_files import load_candles
from coinpilot.contracts import Regime, RejectReason
from services.agent.context import Bar, MinuteRow, resample_hourly
from services.agent.core import ReviewPlan, Skip, plan_review
from tests.unit.agent.factories import PARAMS, book_of, order

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / "agent"
    / "BTC_USDT-1m-20250522T0600-20250523T0700.csv.gz"
)


def real_hours() -> list[Bar]:
    candles = load_candles([FIXTURE])
    rows = [
        MinuteRow(c.ts_open, float(c.open), float(c.high), float(c.low), float(c.close), float(c.volume))
        for c in candles
    ]
    return resample_hourly(rows)


HOURS = real_hours()
BOOK = book_of(HOURS, symbol="USDT-BTC")


def test_the_slice_resamples_to_25_hours_with_first_open_and_last_close() -> None:
    assert len(HOURS) == 25
    assert (HOURS[0].ts_open, HOURS[0].open) == (datetime(2025, 5, 22, 6, tzinfo=UTC), 110880.0)
    assert (HOURS[-1].ts_open, HOURS[-1].close) == (datetime(2025, 5, 23, 6, tzinfo=UTC), 110526.01)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        pytest.param(
            datetime(2025, 5, 22, 17, 1, tzinfo=UTC), RejectReason.AI_CONTEXT_SHORT, id="11-hours-too-short"
        ),
        pytest.param(datetime(2025, 5, 22, 18, 1, tzinfo=UTC), None, id="12-hours-mixed-tape-runs"),
        pytest.param(
            datetime(2025, 5, 22, 19, 1, tzinfo=UTC), RejectReason.VOLUME_RECOVERY_LOW, id="volume-fades"
        ),
        pytest.param(datetime(2025, 5, 23, 3, 1, tzinfo=UTC), None, id="drifting-down-with-volume-runs"),
        pytest.param(
            datetime(2025, 5, 23, 7, 1, tzinfo=UTC),
            RejectReason.FALLING_KNIFE,
            id="six-of-seven-down-at-the-low",
        ),
    ],
)
def test_bear_prefilter_on_real_hours(at: datetime, expected: RejectReason | None) -> None:
    result = plan_review(BOOK, order(at, symbol="USDT-BTC", regime=Regime.BEAR, price="110500"), PARAMS)
    if expected is None:
        assert isinstance(result, ReviewPlan)
    else:
        assert isinstance(result, Skip) and result.reason is expected


def test_the_same_hours_in_a_bull_regime_are_not_prefiltered() -> None:
    at = datetime(2025, 5, 23, 7, 1, tzinfo=UTC)
    result = plan_review(BOOK, order(at, symbol="USDT-BTC", regime=Regime.BULL, price="110500"), PARAMS)
    assert isinstance(result, ReviewPlan) and result.context_len == 24
