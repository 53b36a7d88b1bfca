"""The GARCH worker forked early (``fit_worker``): a run takes the spare, fits equal fits in line.

``coinpilot backtest`` forks the worker before it imports the engine, so that arch is imported on
the other core meanwhile; these tests prove the spare is the one a run uses, that a dead spare
only costs a fork, and that a worker forked from a bare interpreter fits what the engine would.
"""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from apps.backtest import fit_worker
from apps.backtest.volatility_track import FitsAhead, Fitter, HourlyClose, VolatilityTrack, fit_in_line
from coinpilot.analytics.volatility import VolatilityState
from coinpilot.strategy_config import load_strategy_config

CONFIG = load_strategy_config(None).risk_management.volatility
START = datetime(2025, 6, 1, tzinfo=UTC)


def hourly_closes(hours: int = CONFIG.min_returns + 60) -> dict[str, list[HourlyClose]]:
    """A deterministic, volatile enough walk: enough hours for a few daily refits."""
    closes, price = [], 100.0
    for k in range(hours):
        price *= 1.0 + 0.004 * math.sin(k * 1.7) + 0.003 * math.cos(k * 0.31)
        ts_open = START + timedelta(hours=k)
        closes.append((ts_open, Decimal(f"{price:.4f}"), ts_open + timedelta(hours=1)))
    return {"KRW-BTC": closes}


def run_track(fitter: Fitter, hours: dict[str, list[HourlyClose]]) -> list[VolatilityState | None]:
    track, fits = VolatilityTrack(CONFIG, fitter), []
    for symbol, series in hours.items():
        for ts_open, close, now in series:
            refit = track.on_hour(symbol, ts_open, close, now)
            if refit is not None:
                fits.append(refit.after)
    return fits


def wait_until_dead(pid: int) -> None:
    """Until the killed process has exited (its pidfd turns readable; multiprocessing reaps it
    when asked ``is_alive``)."""
    fd = os.pidfd_open(pid)
    try:
        readable, _, _ = select.select([fd], [], [], 10)
        assert readable, f"process {pid} did not die"
    finally:
        os.close(fd)


def worker_pid(ahead: FitsAhead) -> int | None:
    renderer = ahead.to_chart_renderer()
    assert renderer is not None
    pid = renderer.pid
    renderer.close()
    return pid


def test_a_run_takes_the_spare_and_the_next_run_forks_its_own() -> None:
    hours = hourly_closes()
    expected = run_track(fit_in_line(CONFIG), hours)
    assert expected and all(state is not None for state in expected)
    spare = fit_worker.fork_spare()
    assert fit_worker.fork_spare() == spare  # one spare at a time
    ahead = FitsAhead(CONFIG).start()
    ahead.submit(hours)
    assert run_track(ahead, hours) == expected
    assert worker_pid(ahead) == spare
    other = FitsAhead(CONFIG).start()
    other.submit({})
    assert worker_pid(other) != spare


def test_a_spare_that_died_costs_a_fork_not_a_fit() -> None:
    """(One that dies after it was taken costs in-line fits: ``test_fast_path``'s gone worker.)"""
    hours = hourly_closes()
    spare = fit_worker.fork_spare()
    assert spare is not None
    os.kill(spare, signal.SIGKILL)
    wait_until_dead(spare)
    ahead = FitsAhead(CONFIG).start()
    ahead.submit(hours)
    assert run_track(ahead, hours) == run_track(fit_in_line(CONFIG), hours)
    assert worker_pid(ahead) != spare


def test_a_worker_forked_before_the_engine_is_imported_fits_what_the_engine_would() -> None:
    """As the command does it: fork first, import the engine after; the worker imports what it needs."""
    script = """
import select
import sys
from apps.backtest import fit_worker
fit_worker.fork_spare()
assert "arch" not in sys.modules and "apps.backtest.engine" not in sys.modules
from apps.backtest import engine  # noqa: F401
from apps.backtest.volatility_track import FitsAhead, fit_in_line
from tests.unit.backtest.test_fit_worker import CONFIG, hourly_closes, run_track
hours = hourly_closes()
ahead = FitsAhead(CONFIG).start()
ahead.submit(hours)
fits = run_track(ahead, hours)
assert fits == run_track(fit_in_line(CONFIG), hours), fits
assert "arch" in sys.modules  # the in-line reference imported it; the worker had its own
print(len(fits))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 0
