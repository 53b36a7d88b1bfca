"""Live market data readiness on every backtest path: sparse minutes and GARCH from history.

* Minutes missing as an illiquid market misses them (1 to 16 minutes, cut out of real candles):
  the fast, batch and live paths fill them alike and book the same ledger.
* A configuration whose fit needs 150 returns and calls any volatility high: the 210 hours of
  history before the traded window seed each symbol's window at its first traded hour, so the
  first refit (and its VOLATILITY_HIGH alert, and half-size orders) comes with that first hour,
  not 150 traded hours later; the fast, batch and live paths book the same ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from apps.backtest.run import run_backtest, split_window
from apps.backtest.volatility_track import fits_of
from coinpilot.candle_files import load_candles
from coinpilot.strategy_config import SHIPPED_CONFIG, load_strategy_config
from services.risk.refit import history_span
from tests.unit.backtest.test_fast_path import ledger

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def quick_garch(tmp_path_factory) -> Path:
    text = SHIPPED_CONFIG.read_text()
    for old, new in (
        ("min_returns: 500", "min_returns: 150"),
        ("vol_threshold_hourly_pct: 1.5", "vol_threshold_hourly_pct: 0.01"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("garch") / "quick_garch.yaml"
    path.write_text(text)
    return path


def window_until(shared_data: Path, end: datetime):
    files = [shared_data / f"{s}_USDT-1m-20230316-20230501.csv.gz" for s in ("BTC", "ETH")]
    return split_window(load_candles(files, end=end), None, None)


async def test_sparse_minutes_book_the_same_ledger_on_every_path(shared_data: Path) -> None:
    window = window_until(shared_data, datetime(2023, 3, 27, tzinfo=UTC))
    missing = [0, 1, 0, 2, 0, 1, 0, 5, 0, 15, 0, 16]  # the first minutes of each 37 cut, cycled
    kept = [c for i, c in enumerate(window.trade) if (i // 2) % 37 >= missing[(i // 74) % len(missing)]]
    sparse = split_window([*window.warmup, *kept], window.trade[0].ts_open, None)
    btc = [c.ts_open for c in sparse.trade if c.symbol == "USDT-BTC"]
    gaps = {int((b - a) / timedelta(minutes=1)) - 1 for a, b in pairwise(btc)}
    assert gaps == {0, 1, 2, 5, 15, 16}  # filled up to the bound (15), 16 is an outage
    fast, _ = await run_backtest(sparse, path="fast")
    live, _ = await run_backtest(sparse, path="live")
    assert fast.fills and ledger(fast) == ledger(live)
    batch, _ = await run_backtest(sparse, path="batch")
    assert ledger(fast) == ledger(batch)


async def test_the_first_traded_hour_fits_on_the_recorded_history(
    shared_data: Path, quick_garch: Path
) -> None:
    window = window_until(shared_data, datetime(2023, 3, 30, tzinfo=UTC))
    fast, _ = await run_backtest(window, path="fast", strategy_config=quick_garch)
    batch, _ = await run_backtest(window, path="batch", strategy_config=quick_garch)
    assert ledger(fast) == ledger(batch)
    first_hour_end = window.trade[0].ts_open.replace(minute=0) + HOUR
    high = [a for a in fast.alerts if a.type == "VOLATILITY_HIGH"]
    assert {a.symbol for a in high} == {"USDT-BTC", "USDT-ETH"}
    assert min(a.ts_event for a in high) <= first_hour_end + HOUR  # not 150 traded hours later
    assert fast.fills


async def test_the_live_path_seeds_like_the_fast_path(shared_data: Path, quick_garch: Path) -> None:
    window = window_until(shared_data, datetime(2023, 3, 26, 6, tzinfo=UTC))
    fast, _ = await run_backtest(window, path="fast", strategy_config=quick_garch)
    live, _ = await run_backtest(window, path="live", strategy_config=quick_garch)
    assert ledger(fast) == ledger(live)
    assert any(a.type == "VOLATILITY_HIGH" for a in live.alerts)


def test_the_fits_replayed_ahead_seed_the_same_window(shared_data: Path, quick_garch: Path) -> None:
    """The worker's replay of the refits (``fits_of``) makes its first fit on the recorded hours."""
    config = load_strategy_config(quick_garch).risk_management.volatility
    start = datetime(2023, 3, 26, tzinfo=UTC)
    recorded = [(start - k * HOUR, Decimal(20_000 + (k * 37) % 101)) for k in range(300, 0, -1)]
    hours = {"KRW-BTC": [(start, recorded[-1][1], start + HOUR)]}
    assert history_span(start, config) == (start - config.window_hours * HOUR, start)
    assert fits_of(config, hours) == {}  # one hour alone: too few returns
    made = fits_of(config, hours, {"KRW-BTC": recorded})
    assert len(made) == 1
