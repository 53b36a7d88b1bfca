"""Entry rules of BEHAVIOUR §3.2: the acceptance table F and every boundary, in evaluation order.

Values come from the shipped YAML (BULL: RSI14 <= 50, low < 42 and RSI7 >= 42, bounce >= 2,
close > MA; SIDEWAYS: RSI14 <= 48, low < 40, RSI7 >= 42, bounce >= 3, close >= 0.985 MA, close >=
BB lower, vol >= 0.4, BB touch-recovery; BEAR: RSI14 <= 42, low < 30, RSI7 >= 30, bounce >= 2,
close >= 0.97 MA, close >= BB lower, vol >= 0.2, no surge >= 2.0 in the last 3 candles).
"""

from __future__ import annotations

import math

import pytest

from coinpilot.contracts import EntryReason, Regime
from services.strategy.rules import evaluate_entry
from tests.unit.strategy.factories import PARAMS, snap

R = EntryReason
OK = EntryReason.ENTRY_OK
BULL, SIDEWAYS, BEAR, UNKNOWN = Regime.BULL, Regime.SIDEWAYS, Regime.BEAR, Regime.UNKNOWN

# fmt: off
CASE_F = [
    # regime, rsi, rsi7, prev, low, ma, close, vol, bb_lower, touch, recent -> expected
    pytest.param(BULL, 40, 43, 41, 39, 1000, "1005", 1.5, None, None, (), OK, id="F1-bull-valid"),
    pytest.param(BEAR, 35, 31, 29, 28, 1000, "980", 0.5, None, None, (), OK, id="F2-bear-980-above-970"),
    pytest.param(SIDEWAYS, 40, 44, 41, 39, 1000, "990", 0.5, 980, False, (0.8, 0.9, 1.0),
                 R.BB_TOUCH_RECOVERY_PENDING, id="F3-sideways-no-touch-recovery"),
    pytest.param(SIDEWAYS, 40, 44, 41, 39, 1000, "990", 0.5, 980, True, (0.8, 0.9, 1.0),
                 OK, id="F4-sideways-valid"),
    pytest.param(BULL, 51, 43, 41, 39, 1000, "1005", 1.5, None, None, (),
                 R.RSI14_TOO_HIGH, id="F5-rsi14-above-max"),
    pytest.param(BULL, 40, 43, 41, 42, 1000, "1005", 1.5, None, None, (),
                 R.RSI7_NOT_OVERSOLD, id="F6-low-equal-trigger-not-oversold"),
    pytest.param(BULL, 40, 41, 40, 39, 1000, "1005", 1.5, None, None, (),
                 R.RSI7_NOT_RECOVERED, id="F7-rsi7-below-recover"),
    pytest.param(BULL, 40, 42, 41, 40.5, 1000, "1005", 1.5, None, None, (),
                 R.RSI7_BOUNCE_TOO_SMALL, id="F8-bounce-1.5-below-2"),
    pytest.param(BULL, 40, 43, 41, 39, 1000, "1000", 1.5, None, None, (),
                 R.MA_FILTER, id="F9-crossover-needs-strictly-above"),
    pytest.param(BEAR, 35, 31, 29, 28, 1000, "980", 0.5, 985, None, (),
                 R.BELOW_BB_LOWER, id="F10-bear-below-bb-lower"),
    pytest.param(BEAR, 35, 31, 29, 28, 1000, "980", 0.5, 970, None, (0.5, 2.0, 0.9),
                 R.VOLUME_SURGE, id="F11-bear-volume-surge"),
    pytest.param(UNKNOWN, 40, 43, 41, 39, 1000, "1005", 1.5, None, None, (),
                 R.REGIME_UNKNOWN, id="F12-no-entry-in-unknown"),
]
# fmt: on


@pytest.mark.parametrize(
    ("regime", "rsi", "rsi7", "prev", "low", "ma", "close", "vol", "bb_lower", "touch", "recent", "expected"),
    CASE_F,
)
def test_acceptance_case_f(
    regime: Regime,
    rsi: float,
    rsi7: float,
    prev: float,
    low: float,
    ma: float,
    close: str,
    vol: float,
    bb_lower: float | None,
    touch: bool | None,
    recent: tuple[float, ...],
    expected: EntryReason,
) -> None:
    s = snap(
        regime=regime, rsi=rsi, rsi7=rsi7, rsi7_prev=prev, low=low, ma=ma, close=close, vol=vol,
        bb_lower=bb_lower, bb_touch_recovery=touch, recent=recent,
    )  # fmt: skip
    assert evaluate_entry(s, PARAMS).reason is expected


# Boundaries: one row per inequality of §3.2, on both sides of it. Base rows are valid entries.
BULL_BASE = {"regime": BULL}
SIDE_BASE = {
    "regime": SIDEWAYS,
    "rsi7": 44,
    "close": "990",
    "vol": 0.5,
    "bb_lower": 980,
    "bb_touch_recovery": True,
}
BEAR_BASE = {"regime": BEAR, "rsi": 35, "rsi7": 31, "rsi7_prev": 29, "low": 28, "close": "980", "vol": 0.5}

# fmt: off
BOUNDARIES = [
    pytest.param(BULL_BASE, {"rsi": None}, R.RSI14_MISSING, id="rsi14-none-is-missing"),
    pytest.param(BULL_BASE, {"rsi": math.nan}, R.RSI14_MISSING, id="rsi14-nan-is-missing-not-passing"),
    pytest.param(BULL_BASE, {"rsi": 50}, OK, id="rsi14-equal-max-passes"),
    pytest.param(BULL_BASE, {"rsi": 50.0001}, R.RSI14_TOO_HIGH, id="rsi14-just-above-max"),
    pytest.param(BULL_BASE, {"rsi7": None}, R.RSI7_MISSING, id="rsi7-none-is-missing"),
    pytest.param(BULL_BASE, {"rsi7_prev": None}, R.RSI7_MISSING, id="rsi7-prev-none-is-missing"),
    pytest.param(BULL_BASE, {"rsi7": math.nan}, R.RSI7_MISSING, id="rsi7-nan-is-missing"),
    pytest.param(BULL_BASE, {"low": 41.99, "rsi7": 44}, OK, id="low-just-below-trigger"),
    pytest.param(BULL_BASE, {"rsi7": 42, "low": 40}, OK, id="rsi7-equal-recover-passes"),
    pytest.param(BULL_BASE, {"rsi7": 41.99, "low": 39}, R.RSI7_NOT_RECOVERED, id="rsi7-just-below-recover"),
    pytest.param(BULL_BASE, {"low": None, "rsi7_prev": 41}, OK, id="low-missing-uses-min-of-two"),
    pytest.param(BULL_BASE, {"low": None, "rsi7_prev": 42}, R.RSI7_NOT_OVERSOLD, id="low-fallback-at-trig"),
    pytest.param(BULL_BASE, {"rsi7": 43, "low": 41}, OK, id="bounce-equal-minimum-passes"),
    pytest.param(BULL_BASE, {"rsi7": 43, "low": 41.5}, R.RSI7_BOUNCE_TOO_SMALL, id="bounce-below-min"),
    pytest.param(BULL_BASE, {"ma": None}, R.MA_DATA_MISSING, id="ma-missing"),
    pytest.param(BULL_BASE, {"ma": math.nan}, R.MA_DATA_MISSING, id="ma-nan-is-missing"),
    pytest.param(BULL_BASE, {"close": "1000.01"}, OK, id="crossover-just-above-ma"),
    pytest.param(SIDE_BASE, {"close": "985"}, OK, id="proximity-equal-98.5pct-passes"),
    pytest.param(SIDE_BASE, {"close": "984.99", "bb_lower": 900}, R.MA_FILTER, id="prox-below-98.5pct"),
    pytest.param(BEAR_BASE, {"close": "970"}, OK, id="proximity-or-above-equal-97pct"),
    pytest.param(BEAR_BASE, {"close": "969.99"}, R.MA_FILTER, id="proximity-or-above-below-97pct"),
    pytest.param(BEAR_BASE, {"close": "5000"}, OK, id="proximity-has-no-upper-bound"),
    pytest.param(BEAR_BASE, {"bb_lower": 980}, OK, id="close-equal-bb-lower-passes"),
    pytest.param(BEAR_BASE, {"bb_lower": 980.01}, R.BELOW_BB_LOWER, id="close-just-below-bb-lower"),
    pytest.param(BULL_BASE, {"bb_lower": 5000}, OK, id="bull-ignores-bb-lower"),
    pytest.param(BULL_BASE, {"vol": 1.0}, OK, id="volume-ratio-is-a-minimum"),
    pytest.param(BULL_BASE, {"vol": 0.99}, R.VOLUME_TOO_LOW, id="volume-ratio-below-minimum"),
    pytest.param(BULL_BASE, {"vol": 50.0}, OK, id="volume-ratio-has-no-upper-bound"),
    pytest.param(BULL_BASE, {"vol": None}, R.VOLUME_TOO_LOW, id="volume-ratio-missing-fails"),
    pytest.param(SIDE_BASE, {"vol": 0.4}, OK, id="volume-min-equal-passes"),
    pytest.param(SIDE_BASE, {"vol": 0.39}, R.VOLUME_BELOW_MIN, id="volume-min-below"),
    pytest.param(BEAR_BASE, {"vol": None}, R.VOLUME_BELOW_MIN, id="volume-min-missing-fails"),
    pytest.param(BEAR_BASE, {"recent": (1.99, 1.99, 1.99)}, OK, id="surge-just-below-ratio"),
    pytest.param(BEAR_BASE, {"recent": (2.0, 0.5, 0.5)}, R.VOLUME_SURGE, id="surge-equal-ratio-fires"),
    pytest.param(BEAR_BASE, {"recent": (9.0, 0.5, 0.5, 0.5)}, OK, id="surge-looks-at-last-three"),
    pytest.param(BEAR_BASE, {"recent": (0.5, 0.5, math.inf)}, R.VOLUME_SURGE, id="surge-infinite-fires"),
    pytest.param(SIDE_BASE, {"bb_touch_recovery": None}, R.BB_TOUCH_RECOVERY_PENDING, id="touch-missing"),
    pytest.param(BULL_BASE, {"bars": 39}, R.WARMING_UP, id="fewer-than-40-candles"),
    pytest.param(BULL_BASE, {"bars": 40}, OK, id="forty-candles-are-enough"),
]
# fmt: on


@pytest.mark.parametrize(("base", "change", "expected"), BOUNDARIES)
def test_entry_boundary(base: dict[str, object], change: dict[str, object], expected: EntryReason) -> None:
    assert evaluate_entry(snap(**{**base, **change}), PARAMS).reason is expected  # type: ignore[arg-type]


def test_a_valid_entry_lists_every_passed_check_after_the_regime() -> None:
    decision = evaluate_entry(snap(**SIDE_BASE), PARAMS)  # type: ignore[arg-type]
    assert decision.is_entry
    assert decision.passed_checks[0] == "Market Regime: SIDEWAYS"
    assert len(decision.passed_checks) == 8


def test_a_failed_entry_keeps_the_checks_that_passed_before_it() -> None:
    decision = evaluate_entry(snap(regime=BULL, close="1000"), PARAMS)
    assert decision.reason is EntryReason.MA_FILTER
    assert decision.passed_checks[0] == "Market Regime: BULL"
    assert len(decision.passed_checks) == 4
    assert "1000" in decision.detail
