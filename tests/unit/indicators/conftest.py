"""Real closes for the indicator tests: the 90-day BTC file (window A) as float arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

BTC_2025 = "BTC_USDT-1m-20250520-20250818.csv.gz"
BTC_2023 = "BTC_USDT-1m-20230316-20230501.csv.gz"


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    frame = pl.read_csv(path)
    return {name: frame[name].to_numpy() for name in ("ts", "open", "high", "low", "close", "volume")}


@pytest.fixture(scope="session")
def btc_2025(shared_data: Path) -> dict[str, np.ndarray]:
    return read_arrays(shared_data / BTC_2025)


@pytest.fixture(scope="session")
def btc_2023(shared_data: Path) -> dict[str, np.ndarray]:
    return read_arrays(shared_data / BTC_2023)
