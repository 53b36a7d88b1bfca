"""Indicator cost on the 90-day BTC file (130,708 candles): live path per candle, batch throughput.

  window     MinuteWindow.push + values: the maths of one candle (µs)
  core       services.indicator.core.on_candle: maths + hourly/regime + the IndicatorSnapshot (µs)
  batch      compute_history: every candle's values, vectorised (candles/s)
  messages   history_messages: the batch path down to the same contracts the live path emits (candles/s)
Prints figures; asserts nothing. No server needed.
Usage: python bench/bench_indicators.py [path-to-candle-file]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coinpilot.candle_files import load_candles
from coinpilot.indicators import DEFAULT_PARAMS, MinuteWindow, compute_history
from services.indicator.core import history_messages, initial_state, on_candle

DEFAULT_FILE = Path(
    os.environ.get("COINPILOT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
DEFAULT_FILE = DEFAULT_FILE / "BTC_USDT-1m-20250520-20250818.csv.gz"


def main(path: Path) -> None:
    candles = load_candles([path])
    n = len(candles)
    ts = np.array([int(c.ts_open.timestamp()) * 1000 for c in candles], dtype=np.int64)
    cols = {
        k: np.array([float(getattr(c, k)) for c in candles])
        for k in ("open", "high", "low", "close", "volume")
    }

    window = MinuteWindow()
    ts_list, close, volume = ts.tolist(), cols["close"].tolist(), cols["volume"].tolist()
    started = time.perf_counter()
    for i in range(n):
        window = window.push(ts_list[i], close[i], volume[i])
        window.values(DEFAULT_PARAMS)
    window_us = (time.perf_counter() - started) / n * 1e6

    state = initial_state(candles[0].symbol)
    started = time.perf_counter()
    for candle in candles:
        state = on_candle(state, candle).state
    core_us = (time.perf_counter() - started) / n * 1e6

    started = time.perf_counter()
    compute_history(ts, cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"])
    batch_s = time.perf_counter() - started

    started = time.perf_counter()
    for _ in history_messages(candles):
        pass
    messages_s = time.perf_counter() - started

    print(f"indicators on {path.name}: {n:,} candles")
    print(f"  live window (push + values)     {window_us:8.1f} µs/candle")
    print(f"  live core (on_candle, messages) {core_us:8.1f} µs/candle   ({1e6 / core_us:,.0f} candles/s)")
    print(f"  batch compute_history           {n / batch_s:10,.0f} candles/s  ({batch_s:.2f} s)")
    print(f"  batch history_messages          {n / messages_s:10,.0f} candles/s  ({messages_s:.2f} s)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FILE)
