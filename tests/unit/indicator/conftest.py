"""Real candles for the indicator core: the March 2023 BTC file (with its 80-minute gap) as KRW-BTC."""

from __future__ import annotations

from pathlib import Path

import pytest

from coinpilot.candle_files import load_candles
from coinpilot.contracts import Contract, MinuteCandle
from services.indicator.core import initial_state, run_candles

BTC_2023 = "BTC_USDT-1m-20230316-20230501.csv.gz"
SLICE = 20_000  # 13.9 days: the gap (after 2023-03-24 12:39) and the first 133 known regimes


@pytest.fixture(scope="session")
def btc_2023_candles(shared_data: Path) -> list[MinuteCandle]:
    return load_candles([shared_data / BTC_2023], rename={"USDT-BTC": "KRW-BTC"})


@pytest.fixture(scope="session")
def btc_slice(btc_2023_candles: list[MinuteCandle]) -> list[MinuteCandle]:
    return btc_2023_candles[:SLICE]


@pytest.fixture(scope="session")
def btc_slice_live(btc_slice: list[MinuteCandle]) -> list[Contract]:
    """Every message of a candle-by-candle run of the core over the slice (computed once)."""
    _, out = run_candles(initial_state("KRW-BTC"), btc_slice)
    return out
