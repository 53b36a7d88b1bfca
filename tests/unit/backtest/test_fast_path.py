"""The fast backtest path books exactly the ledger of the candle-by-candle path.

The fast path (``Engine.run_series``) runs the strategy core only on candidate candles and reads
candles as columns. Its shortcuts are proven here piece by piece (columns == contracts, exact
hourly bars, candidates a superset of what the core fires on) and as a whole (same fills, AI
decisions, rejections, alerts and equity curve as ``run_batch`` on real multi-symbol windows).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from apps.backtest import engine as engine_module
from apps.backtest.candidates import (
    ExitTables,
    HeldPosition,
    entry_mask,
    next_exit_candidate,
    regime_codes,
)
from apps.backtest.engine import BacktestResult, Engine
from apps.backtest.run import DEFAULT_WARMUP, run_backtest, split_window, to_series
from apps.backtest.series import (
    PRICE_COLUMNS,
    SymbolSeries,
    load_series,
    series_by_symbol,
    series_window,
)
from apps.backtest.volatility_track import FitsAhead, fit_in_line
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Regime
from coinpilot.indicators import resample_hourly
from coinpilot.strategy_config import load_strategy_config
from services.indicator.core import ComputedHistory
from services.indicator.settings import config_from_strategy
from services.strategy.rules import OpenPosition, evaluate_entry, evaluate_exit
from services.strategy.settings import StrategySettings

PARAMS = StrategySettings().params(None)
INDICATORS = config_from_strategy(load_strategy_config(None))


def ledger(result: BacktestResult) -> dict[str, object]:
    """Everything a run books, as text: any difference in any message or mark fails."""
    out: dict[str, object] = {
        name: [m.to_json() for m in getattr(result, name)]
        for name in ("fills", "decisions", "rejections", "alerts")
    }
    out["equity"] = [(p.ts.isoformat(), str(p.equity), p.has_position) for p in result.equity]
    out["counters"] = result.counters
    return out


@pytest.fixture(scope="module")
def sample_window():
    return split_window(load_candles(sample_files()), None, None)


@pytest.fixture(scope="module")
def btc_sample() -> SymbolSeries:
    return load_series(sample_files(), symbols=["USDT-BTC"])["USDT-BTC"]


@pytest.fixture(scope="module")
def btc_history(btc_sample) -> ComputedHistory:
    return ComputedHistory.compute(
        "USDT-BTC", btc_sample.ts_ms, btc_sample.floats, btc_sample.hour_bars, INDICATORS
    )


async def test_the_fast_path_books_the_batch_paths_ledger_on_the_sample(sample_window) -> None:
    fast, _ = await run_backtest(sample_window, path="fast")
    batch, _ = await run_backtest(sample_window, path="batch")
    assert len(fast.fills) >= 5 and fast.decisions and fast.rejections
    assert ledger(fast) == ledger(batch)


async def test_the_fast_path_books_the_batch_paths_ledger_on_three_symbols(shared_data: Path) -> None:
    """BTC, ETH and SOL of spring 2023 (gaps included), 14 days: timestamps tie across symbols."""
    files = [shared_data / f"{s}_USDT-1m-20230316-20230501.csv.gz" for s in ("BTC", "ETH", "SOL")]
    end = datetime(2023, 3, 30, tzinfo=UTC)
    window = split_window(load_candles(files, end=end), None, None)
    fast, fast_report = await run_backtest(window, path="fast")
    batch, batch_report = await run_backtest(window, path="batch")
    assert len({f.symbol for f in fast.fills}) >= 2
    assert ledger(fast) == ledger(batch)
    assert fast_report == batch_report
    # the columnar loader (what `coinpilot backtest` reads files with) gives the same run
    columns = series_window(load_series(files, end=end), None, DEFAULT_WARMUP)
    from_files, _ = await run_backtest(columns)
    assert ledger(from_files) == ledger(fast)


def test_columns_read_from_files_are_the_candles_load_candles_reads(shared_data: Path) -> None:
    files = [*sample_files(), shared_data / "XRP_USDT-1m-20230401-20230501.csv.gz"]
    columns = load_series(files, end=datetime(2023, 4, 3, tzinfo=UTC))
    reference = series_by_symbol(load_candles(files, end=datetime(2023, 4, 3, tzinfo=UTC)))
    assert sorted(columns) == sorted(reference) == ["USDT-BTC", "USDT-ETH", "USDT-XRP"]
    for symbol, series in columns.items():
        expected = reference[symbol]
        assert np.array_equal(series.ts_ms, expected.ts_ms)
        for column in PRICE_COLUMNS:
            assert [Decimal(t) for t in series.text[column]] == [Decimal(t) for t in expected.text[column]]
            assert np.array_equal(series.floats[column], expected.floats[column])
        assert series.candle(7) == expected.candle(7)


def test_a_window_of_candles_becomes_the_same_columns(sample_window) -> None:
    series = to_series(sample_window)
    assert series.start == sample_window.trade[0].ts_open
    assert series.traded() == len(sample_window.trade) and series.warmup() == len(sample_window.warmup)
    btc = series.series["USDT-BTC"]
    first = btc.index_at(series.start)
    assert btc.candle(first) == next(c for c in sample_window.trade if c.symbol == "USDT-BTC")


def test_exact_hourly_bars_are_those_of_the_candles(btc_sample) -> None:
    candles = btc_sample.candles(0, len(btc_sample))
    expected = resample_hourly(
        (int(t), c.open, c.high, c.low, c.close, c.volume)
        for t, c in zip(btc_sample.ts_ms, candles, strict=True)
    )
    assert btc_sample.hour_bars(len(expected)) == expected


def test_exact_hourly_bars_let_the_decimals_decide_when_floats_tie() -> None:
    """Two highs a float cannot tell apart (19 digits): the larger decimal is the high."""
    base = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    highs = ["1.000000000000000001", "1.000000000000000002", "0.5"]
    lows = ["0.300000000000000002", "0.300000000000000001", "0.4"]
    rows = [
        (base + k * 60_000, Decimal("0.5"), Decimal(h), Decimal(lo), Decimal("0.5"), Decimal("1.1"))
        for k, (h, lo) in enumerate(zip(highs, lows, strict=True))
    ]
    series = SymbolSeries(
        "KRW-BTC",
        np.array([r[0] for r in rows], dtype=np.int64),
        {c: [str(r[k + 1]) for r in rows] for k, c in enumerate(PRICE_COLUMNS)},
        {c: np.array([float(r[k + 1]) for r in rows]) for k, c in enumerate(PRICE_COLUMNS)},
    )
    [bar] = series.hour_bars(1)
    assert bar == resample_hourly(rows, include_forming=True)[0]
    assert (bar.high, bar.low, bar.volume) == (Decimal(highs[1]), Decimal(lows[1]), Decimal("3.3"))


def test_entry_candidates_include_every_candle_the_core_enters_on(btc_sample, btc_history) -> None:
    result = btc_history.result
    mask = entry_mask(result, regime_codes(result), PARAMS)
    entries = [
        i
        for i in range(len(btc_sample))
        if evaluate_entry(btc_history.snapshot_at(i, btc_sample.candle(i)), PARAMS).is_entry
    ]
    assert entries, "the sample has entries"
    assert all(mask[i] for i in entries)
    assert mask.sum() < len(btc_sample) / 5  # and it really filters


def test_exit_candidates_never_come_after_the_first_exit_the_core_fires(btc_sample, btc_history) -> None:
    """Random positions (entry price near a real close, so stops and targets are close by; some
    exactly on a take-profit boundary): the first candidate is at or before the first exit."""
    result = btc_history.result
    codes = regime_codes(result)
    lo, span = 13_000, 900
    snapshots = {i: btc_history.snapshot_at(i, btc_sample.candle(i)) for i in range(lo, lo + 3 * span)}
    rng = random.Random(7)
    fired_before_end = 0
    for trial in range(150):
        start = rng.randrange(lo, lo + 2 * span)
        regime = rng.choice((Regime.BULL, Regime.SIDEWAYS, Regime.BEAR))
        close = snapshots[start + rng.randrange(0, span)].candle.close
        if trial % 5 == 0:  # exactly on the take-profit boundary of the entry regime
            avg = close / (1 + PARAMS.exit_rules(regime).take_profit)
        else:
            avg = close * Decimal(str(round(rng.uniform(0.96, 1.04), 4)))
        opened_at = snapshots[start].ts_event - timedelta(minutes=rng.randrange(0, 4000))
        hwm = max(avg, avg * Decimal(str(round(rng.uniform(1.0, 1.03), 4))))
        first_exit, mark = None, hwm
        for i in range(start, lo + 3 * span):
            decision = evaluate_exit(OpenPosition(avg, opened_at, regime, mark), snapshots[i], PARAMS)
            if decision.is_exit:
                first_exit = i
                break
            mark = decision.new_hwm
        candidate = next_exit_candidate(
            HeldPosition(float(avg), float(hwm), opened_at, regime),
            ExitTables.build(regime, PARAMS),
            btc_sample.floats["close"],
            result.batch.rsi_14,
            btc_sample.ts_ms,
            codes,
            start,
        )
        if first_exit is not None:
            fired_before_end += 1
            assert candidate is not None and start <= candidate <= first_exit, (trial, candidate, first_exit)
    assert fired_before_end > 100


@pytest.mark.parametrize("ahead", [False, True], ids=["fits-in-line", "fits-ahead-in-a-worker"])
async def test_the_fast_path_refits_garch_as_the_batch_path_does(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, ahead: bool
) -> None:
    """35 days of 2025 BTC: after 210 h of warm-up and 500 traded hours, GARCH refits daily;
    fitted in line or ahead in a worker process, the fits and the ledger are the batch path's."""
    monkeypatch.setattr(engine_module, "FIT_AHEAD_MIN", 1 if ahead else 10**9)
    started = []
    real_start = FitsAhead.start
    monkeypatch.setattr(FitsAhead, "start", lambda self: started.append(1) or real_start(self))
    end = datetime(2025, 6, 24, tzinfo=UTC)
    window = split_window(
        load_candles([shared_data / "BTC_USDT-1m-20250520-20250818.csv.gz"], end=end), None, None
    )
    fast_engine, batch_engine = Engine("garch"), Engine("garch")
    fast = await fast_engine.run_series(to_series(window))
    batch = await batch_engine.run_batch(window.warmup, window.trade)
    assert len(started) == int(ahead)
    assert fast_engine.vol_states and fast_engine.vol_states == batch_engine.vol_states
    assert fast_engine.hourly_closes == batch_engine.hourly_closes
    assert ledger(fast) == ledger(batch)


def test_fits_ahead_that_failed_or_missed_are_fitted_in_line() -> None:
    """A gone worker or a fit it did not make (other closes) costs time, never a different result."""
    config = load_strategy_config(None).risk_management.volatility
    now = datetime(2025, 6, 1, tzinfo=UTC)
    closes = [Decimal(100) + Decimal(k % 7) / 10 + Decimal(k) / 1000 for k in range(config.min_returns + 2)]
    expected = fit_in_line(config)("KRW-BTC", closes, now)
    assert expected is not None
    gone = FitsAhead(config).start()
    gone.close()
    assert gone("KRW-BTC", closes, now) == expected
    idle = FitsAhead(config).start()
    try:
        idle.submit({"KRW-BTC": []})  # no hour, no fit: the worker finishes without making this one
        assert idle("KRW-BTC", closes, now) == expected
    finally:
        idle.close()
