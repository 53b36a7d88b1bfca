"""Live == batch == after-restart, exactly, on the full 90-day BTC file (130,708 candles).

The three paths: ``on_candle`` candle by candle (live), ``history_messages`` (the vectorised batch
path over the whole file) and ``warm_state`` from what ``market_data`` would hold at a cut point,
then live again (a restart). Every message (snapshots, hourly candles, regimes) must be equal:
floats compared exactly, not approximately.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coinpilot.candle_files import load_candles
from coinpilot.contracts import Contract, IndicatorSnapshot, MinuteCandle, Regime, RegimeUpdate
from services.indicator.core import (
    DEFAULT_CONFIG,
    history_messages,
    hourly_buckets,
    initial_state,
    run_candles,
    warm_state,
)

pytestmark = pytest.mark.slow

BTC_2025 = "BTC_USDT-1m-20250520-20250818.csv.gz"
RESUMED = 1_500  # candles run after each restart (they cross at least one hour close)


def per_candle(messages: list[Contract]) -> list[list[Contract]]:
    """The messages grouped by the candle that produced them (each group ends with its snapshot)."""
    groups: list[list[Contract]] = []
    current: list[Contract] = []
    for m in messages:
        current.append(m)
        if isinstance(m, IndicatorSnapshot):
            groups.append(current)
            current = []
    return groups


def test_live_batch_and_restart_agree_exactly_on_90_days_of_btc(shared_data: Path) -> None:
    candles: list[MinuteCandle] = load_candles([shared_data / BTC_2025])
    assert len(candles) == 130_708 and candles[0].symbol == "USDT-BTC"

    _, live = run_candles(initial_state("USDT-BTC"), candles)
    batch = list(history_messages(candles))
    assert len(batch) == len(live)
    assert batch == live

    groups = per_candle(live)
    assert len(groups) == len(candles)
    regimes = {m.regime for m in live if isinstance(m, RegimeUpdate)}
    assert regimes == {Regime.UNKNOWN, Regime.BULL, Regime.SIDEWAYS, Regime.BEAR}

    cuts = [100, 11_990, 12_000, 45_123, 88_888, 130_708 - RESUMED]
    for cut in cuts:
        stored = candles[:cut]
        state = warm_state(
            "USDT-BTC", stored[-DEFAULT_CONFIG.window :], hourly_buckets(stored[-(250 * 60) :])
        )
        _, resumed = run_candles(state, candles[cut : cut + RESUMED])
        assert resumed == [m for g in groups[cut : cut + RESUMED] for m in g], f"restart after candle {cut}"
