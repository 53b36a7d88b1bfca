"""Exit rules of BEHAVIOUR §3.4: acceptance table G and each boundary, first hit wins.

Position: avg 100, opened 1 h before the candle, stored HWM none, RSI 50, entry regime = current
unless a row says otherwise. "Now" is the candle's event time (``ts_event``).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import ExitReason, Regime
from services.strategy.rules import OpenPosition, evaluate_exit
from tests.unit.strategy.factories import PARAMS, T0, snap

BULL, SIDEWAYS, BEAR, UNKNOWN = Regime.BULL, Regime.SIDEWAYS, Regime.BEAR, Regime.UNKNOWN
SL, TS, TP, RSI, TL = (
    ExitReason.STOP_LOSS,
    ExitReason.TRAILING_STOP,
    ExitReason.TAKE_PROFIT,
    ExitReason.RSI_OVERBOUGHT,
    ExitReason.TIME_LIMIT,
)


def position(entry: Regime, hwm: str | None = None, held: timedelta = timedelta(hours=1)) -> OpenPosition:
    return OpenPosition(Decimal(100), T0 - held, entry, None if hwm is None else Decimal(hwm))


# fmt: off
CASES = [
    # entry, current, close, rsi, stored hwm, hours held -> expected
    pytest.param(SIDEWAYS, SIDEWAYS, "100.5", 75, None, 1, None, id="G-overbought-below-min-profit-holds"),
    pytest.param(SIDEWAYS, SIDEWAYS, "101.5", 75, None, 1, RSI, id="G-overbought-with-profit-exits"),
    pytest.param(BEAR, BULL, "96.5", 50, None, 1, SL, id="G-regime-change-keeps-tightest-stop"),
    pytest.param(BEAR, BEAR, "96.5", 50, None, 1, None, id="G-same-regime-bear-stop-5pct-holds"),
    pytest.param(BULL, UNKNOWN, "97.0", 50, None, 1, SL, id="G-unknown-uses-sideways-tightest-stop"),
    pytest.param(BEAR, BEAR, "100.2", 50, None, 25, TL, id="G-bear-held-25h-time-limit"),
    pytest.param(BEAR, BEAR, "100.2", 50, None, 24, None, id="G-bear-held-exactly-24h-holds"),
    pytest.param(BULL, BULL, "105.0", 50, "105.0", 1, TP, id="G-take-profit-trailing-not-hit"),
    pytest.param(BULL, BULL, "97.97", 50, "101.0", 1, TS, id="G-trailing-stop-at-a-loss"),
    pytest.param(BULL, BULL, "97.00", 50, None, 1, SL, id="stop-loss-exactly-at-minus-3pct"),
    pytest.param(BULL, BULL, "97.01", 50, None, 1, None, id="stop-loss-just-above"),
    pytest.param(BULL, BULL, "97.98", 50, "101.0", 1, None, id="trailing-just-above-stop"),
    pytest.param(BULL, BULL, "98.0", 50, "100.99", 1, None, id="trailing-not-armed-below-activation"),
    pytest.param(BULL, BULL, "104.99", 50, None, 1, None, id="take-profit-just-below"),
    pytest.param(BULL, BULL, "101.0", 75.01, None, 1, RSI, id="rsi-exit-at-exactly-min-profit"),
    pytest.param(BULL, BULL, "101.0", 75, None, 1, None, id="rsi-equal-overbought-holds"),
    pytest.param(BULL, BULL, "100.99", 80, None, 1, None, id="rsi-exit-needs-min-profit"),
    pytest.param(BULL, BULL, "101.0", None, None, 1, None, id="rsi-missing-never-exits"),
    pytest.param(BULL, BEAR, "100.0", 50, None, 25, TL, id="time-limit-of-current-regime"),
    pytest.param(BEAR, BULL, "100.0", 50, None, 25, None, id="bull-current-block-allows-72h"),
    pytest.param(BULL, BULL, "90.0", 50, "120", 100, SL, id="stop-loss-wins-over-everything"),
]
# fmt: on


@pytest.mark.parametrize(("entry", "current", "close", "rsi", "hwm", "hours", "expected"), CASES)
def test_exit_rules(
    entry: Regime,
    current: Regime,
    close: str,
    rsi: float | None,
    hwm: str | None,
    hours: int,
    expected: ExitReason | None,
) -> None:
    held = timedelta(hours=hours)
    decision = evaluate_exit(position(entry, hwm, held), snap(regime=current, close=close, rsi=rsi), PARAMS)
    assert decision.reason is expected


def test_trailing_stop_sequence_of_case_g() -> None:
    """Closes 100.5, 101.5, 100.0, 98.0 with entry 100, trail 3 %, activation 1 %: the last exits."""
    hwm: Decimal | None = None
    outcomes: list[tuple[ExitReason | None, Decimal]] = []
    for close in ("100.5", "101.5", "100.0", "98.0"):
        decision = evaluate_exit(
            position(BULL, None if hwm is None else str(hwm)), snap(close=close, rsi=50), PARAMS
        )
        hwm = decision.new_hwm
        outcomes.append((decision.reason, decision.new_hwm))
    assert outcomes == [
        (None, Decimal("100.5")),
        (None, Decimal("101.5")),
        (None, Decimal("101.5")),
        (TS, Decimal("101.5")),
    ]


def test_the_tightest_stop_is_kept_and_everything_else_comes_from_the_current_regime() -> None:
    decision = evaluate_exit(position(BEAR), snap(regime=BULL, close="100", rsi=50), PARAMS)
    bull = PARAMS.exit[BULL]
    assert decision.rules.stop_loss == Decimal("0.03")
    assert decision.rules.take_profit == bull.take_profit
    assert decision.rules.time_limit == bull.time_limit


def test_a_zero_entry_price_never_exits() -> None:
    zero = OpenPosition(Decimal(0), T0 - timedelta(hours=500), BULL, None)
    assert evaluate_exit(zero, snap(close="1", rsi=99), PARAMS).reason is None


def test_the_high_water_mark_follows_closes_only_upwards() -> None:
    assert evaluate_exit(position(BULL, "103"), snap(close="102", rsi=50), PARAMS).new_hwm == Decimal("103")
    assert evaluate_exit(position(BULL, "103"), snap(close="104", rsi=50), PARAMS).new_hwm == Decimal("104")
