"""BB lower touch-recovery (§2.4, §13.3 C)."""

from __future__ import annotations

import math

import pytest

from coinpilot.indicators import bb_touch_recovery

NAN = math.nan


@pytest.mark.parametrize(
    ("closes", "lowers", "lookback", "sustain", "expected"),
    [
        pytest.param([100, 97, 99, 101], [98] * 4, 3, 2, True, id="touched-then-two-closes-above"),
        pytest.param([100, 97, 99, 97.5], [98] * 4, 3, 2, False, id="fell-back-below-in-the-sustain"),
        pytest.param([100, 99, 99, 101], [98] * 4, 3, 2, False, id="never-touched"),
        pytest.param([97, 99], [98] * 2, 3, 2, False, id="shorter-than-the-lookback"),
        pytest.param([97, 99], [98] * 2, 1, 2, False, id="shorter-than-sustain-plus-one"),
        pytest.param([100, 98, 99], [98] * 3, 3, 1, True, id="a-close-equal-to-the-band-is-a-touch"),
        pytest.param([100, 97, 98], [98] * 3, 3, 1, False, id="a-close-equal-to-the-band-is-not-a-recovery"),
        pytest.param([95, 97, 99, 101], [NAN, 98, 98, 98], 3, 2, True, id="rows-without-a-band-are-dropped"),
        pytest.param([95, 99, 101], [NAN, 98, 98], 3, 2, False, id="dropping-them-can-make-it-too-short"),
    ],
)
def test_bb_touch_recovery(
    closes: list[float], lowers: list[float], lookback: int, sustain: int, expected: bool
) -> None:
    assert bb_touch_recovery(closes, lowers, lookback, sustain) is expected
