"""The worker's fits split with a forked sibling (``fit_pair``): the fits of fitting in line, always.

The sibling makes every other fit of the plan (the run's fits if none failed); a failure that
changes the plan, or a sibling that is gone, only moves fits back in line.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from apps.backtest.fit_pair import PairFitter, planned_fits
from apps.backtest.volatility_track import Fitter, HourlyClose, fit_in_line
from coinpilot.analytics.volatility import VolatilityState
from tests.unit.backtest.test_fit_worker import CONFIG, hourly_closes, run_track, wait_until_dead

HOURS = hourly_closes(CONFIG.min_returns + 24 * 4)


@dataclass
class Counting:
    """The fitter the worker itself fits with: counts the fits it makes (the sibling's are not)."""

    fit: Fitter
    made: list[datetime] = field(default_factory=list)

    def __call__(self, symbol: str, closes: list[Decimal], now: datetime) -> VolatilityState | None:
        self.made.append(now)
        return self.fit(symbol, closes, now)


def pair(hours: dict[str, list[HourlyClose]]) -> tuple[PairFitter, Counting]:
    """A pair fitting with a counter: the sibling counts in its own memory, so ``made`` holds the
    worker's own fits only."""
    counting = Counting(fit_in_line(CONFIG))
    return PairFitter(CONFIG, hours, (), fit=counting), counting


def with_a_zero_close(hours: dict[str, list[HourlyClose]], at: int) -> dict[str, list[HourlyClose]]:
    """A close of 0 at hour ``at``: every fit over a window holding it fails."""
    series = list(hours["KRW-BTC"])
    ts_open, _, now = series[at]
    series[at] = (ts_open, Decimal(0), now)
    return {"KRW-BTC": series}


def test_the_plan_is_the_fits_of_a_run_where_none_fails() -> None:
    nows = [now for _, _, now in planned_fits(CONFIG, HOURS)]
    made = Counting(fit_in_line(CONFIG))
    run_track(made, HOURS)
    assert len(nows) >= 4
    assert nows == made.made


def test_the_sibling_makes_every_other_fit_and_the_fits_are_the_in_line_ones() -> None:
    expected = run_track(fit_in_line(CONFIG), HOURS)
    fitter, own = pair(HOURS)
    try:
        assert run_track(fitter, HOURS) == expected
    finally:
        fitter.close()
    assert all(state is not None for state in expected)
    assert len(own.made) == (len(expected) + 1) // 2


def test_a_failed_fit_that_changes_the_plan_moves_the_rest_in_line() -> None:
    first = planned_fits(CONFIG, HOURS)[0][2]
    at = next(k for k, (_, _, now) in enumerate(HOURS["KRW-BTC"]) if now > first)
    hours = with_a_zero_close(HOURS, at)
    expected = run_track(fit_in_line(CONFIG), hours)
    fitter, own = pair(hours)
    try:
        assert run_track(fitter, hours) == expected
    finally:
        fitter.close()
    assert expected[0] is not None and expected[-1] is None  # every hour after the zero is refitted
    plan = planned_fits(CONFIG, hours)
    assert len(expected) > len(plan)
    # once failed, the track refits every hour, the planned hours among them: those the sibling made
    # still serve; the unplanned ones are fitted in line
    assert len(own.made) == len(expected) - len(plan) // 2


def test_a_sibling_that_is_gone_costs_in_line_fits_only() -> None:
    expected = run_track(fit_in_line(CONFIG), HOURS)
    fitter, own = pair(HOURS)
    pid = fitter.sibling_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until_dead(pid)
    try:
        assert run_track(fitter, HOURS) == expected
    finally:
        fitter.close()
    assert len(own.made) == len(expected)
