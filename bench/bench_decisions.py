"""Decisions per second of the strategy and risk cores, pure and in process, and one GARCH refit.

Input: the 90-day BTC/USDT 1m file (shared/data). Its indicator snapshots are computed first with
the indicator maths (timed apart, not part of the figures). Then:
  strategy  ``services.strategy.core.on_snapshot`` over every snapshot, orders filled at once
  risk      ``services.risk.core.on_entry_signal`` for an entry signal on every snapshot (each one
            sized and checked through all of §4.2; the pending order is cleared between them)
  garch     ``fit_volatility`` on the last 2160 hourly returns (median of several fits, the one-off
            ``arch`` import excluded)
Usage: python bench/bench_decisions.py [DATA_DIR]
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinpilot.analytics.volatility import fit_volatility
from coinpilot.candle_files import load_candles
from coinpilot.contracts import EntrySignal, HourlyCandle, IndicatorSnapshot, Regime, Side
from coinpilot.strategy_config import load_strategy_config
from services.indicator.core import history_messages
from services.indicator.settings import config_from_strategy
from services.risk.core import Ledger, VolatilityReading, initial_state, on_entry_signal
from services.risk.params import RiskParams
from services.strategy.core import SymbolState, on_fill, on_snapshot
from services.strategy.params import StrategyParams
from tests.unit.strategy.factories import fill

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILE = "BTC_USDT-1m-20250520-20250818.csv.gz"


def main(data: Path) -> None:
    config = load_strategy_config()
    started = time.perf_counter()
    candles = load_candles([data / FILE])
    messages = list(history_messages(candles, config_from_strategy(config)))
    snapshots = [m for m in messages if isinstance(m, IndicatorSnapshot)]
    hourly = [m for m in messages if isinstance(m, HourlyCandle)]
    built = time.perf_counter() - started
    print(f"input      {len(snapshots):,} snapshots, {len(hourly):,} hours ({built:.1f} s to build)")

    params = StrategyParams.from_config(config)
    state = SymbolState(snapshots[0].symbol)
    signals = 0
    started = time.perf_counter()
    for snapshot in snapshots:
        step = on_snapshot(state, snapshot, params)
        state = step.state
        for signal in step.out:
            signals += 1
            side = Side.BUY if isinstance(signal, EntrySignal) else Side.SELL
            state = on_fill(
                state,
                fill(
                    side,
                    order_id=state.pending_order_id or "",
                    price=str(signal.price),
                    at=signal.ts_event,
                    symbol=signal.symbol,
                ),
            )
    elapsed = time.perf_counter() - started
    print(f"strategy   {len(snapshots) / elapsed:>12,.0f} decisions/s  ({signals} signals, {elapsed:.2f} s)")

    risk = RiskParams.from_config(config)
    ledger = Ledger(balance=Decimal(10_000_000))
    reading = VolatilityReading()
    entries = [
        EntrySignal(
            ts_event=s.ts_event, symbol=s.symbol, price=s.candle.close, regime=Regime.SIDEWAYS, snapshot=s
        )
        for s in snapshots
    ]
    risk_state = initial_state(entries[0].ts_event, risk)
    proposed = 0
    started = time.perf_counter()
    for signal in entries:
        step = on_entry_signal(risk_state, signal, ledger, reading, risk)
        proposed += step.decision is not None and step.decision.value == "proposed"
        risk_state = replace(step.state, pending_orders={})
    elapsed = time.perf_counter() - started
    print(f"risk       {len(entries) / elapsed:>12,.0f} decisions/s  ({proposed} proposed, {elapsed:.2f} s)")

    closes = [float(h.close) for h in hourly]
    as_of = hourly[-1].ts_event
    fit_volatility("USDT-BTC", closes, as_of, threshold_pct=1.5)  # imports arch
    times = []
    for _ in range(7):
        started = time.perf_counter()
        fitted = fit_volatility("USDT-BTC", closes, as_of, threshold_pct=1.5)
        times.append(time.perf_counter() - started)
    print(
        f"garch      {statistics.median(times) * 1000:>12.1f} ms per refit "
        f"({fitted.returns_used} hourly returns, sigma {fitted.current_volatility:.4f} %/h)"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
