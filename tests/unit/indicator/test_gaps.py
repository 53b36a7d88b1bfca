"""Missing minutes through the indicator core: live, restart and batch give the same messages
across filled gaps and outages, and the strategy's warm-up counts minutes of history."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest
import yaml

from coinpilot.contracts import EntryReason, IndicatorSnapshot, MinuteCandle, Regime
from coinpilot.strategy_config import SHIPPED_CONFIG, load_strategy_config, parse_strategy_config
from services.indicator.core import (
    DEFAULT_CONFIG,
    history_messages,
    hourly_buckets,
    initial_state,
    run_candles,
    warm_state,
)
from services.indicator.settings import config_from_strategy
from services.strategy.params import StrategyParams
from services.strategy.rules import evaluate_entry

BOUND = DEFAULT_CONFIG.max_filled_gap
# (index of the first missing candle, minutes missing): a 1-minute gap, the bound, an outage of
# bound + 1, a gap holding a :59 minute, and (in the known-regime part) 1 and bound + 1 again
CUTS = ((2_000, 1), (3_000, BOUND), (4_000, BOUND + 1), (5_083, 3), (14_000, 1), (16_000, BOUND + 1))


@pytest.fixture(scope="module")
def gapped(btc_slice: list[MinuteCandle]) -> list[MinuteCandle]:
    cut = {i for at, n in CUTS for i in range(at, at + n)}
    return [c for i, c in enumerate(btc_slice) if i not in cut]


@pytest.fixture(scope="module")
def gapped_live(gapped: list[MinuteCandle]) -> list:
    return run_candles(initial_state("KRW-BTC"), gapped)[1]


def snapshots(messages: list) -> dict:
    return {m.candle.ts_open: m for m in messages if isinstance(m, IndicatorSnapshot)}


def test_the_cuts_make_the_gaps_meant(gapped) -> None:
    holding_59 = gapped[5_083 - 1 - (1 + BOUND + BOUND + 1)]
    assert (holding_59.ts_open + timedelta(minutes=2)).minute == 59  # the hour closes on the next candle
    steps = [int((b.ts_open - a.ts_open) / timedelta(minutes=1)) - 1 for a, b in pairwise(gapped)]
    assert sorted(s for s in steps if s) == sorted([1, BOUND, BOUND + 1, 3, 1, BOUND + 1, 80])


def test_batch_equals_live_across_filled_gaps_and_outages(gapped, gapped_live) -> None:
    assert list(history_messages(gapped)) == gapped_live


def test_a_restart_after_a_filled_gap_continues_like_the_uninterrupted_run(gapped, gapped_live) -> None:
    by_candle: dict = {}
    current: list = []
    for m in gapped_live:
        current.append(m)
        if isinstance(m, IndicatorSnapshot):
            by_candle[m.candle.ts_open] = current
            current = []
    after_gaps = [
        i for i in range(1, len(gapped)) if gapped[i].ts_open - gapped[i - 1].ts_open > timedelta(minutes=1)
    ]
    for cut in [i + k for i in after_gaps for k in (0, 1, 150)]:
        stored = gapped[:cut]
        state = warm_state("KRW-BTC", stored[-DEFAULT_CONFIG.window :], hourly_buckets(stored))
        _, resumed = run_candles(state, gapped[cut : cut + 300])
        assert resumed == [m for c in gapped[cut : cut + 300] for m in by_candle[c.ts_open]], cut


def test_the_snapshot_reports_the_gap_and_counts_minutes_of_history(gapped, gapped_live) -> None:
    by_time = snapshots(gapped_live)
    for at, missing in CUTS:
        before = gapped[at - 1 - sum(n for a, n in CUTS if a < at)]
        after = by_time[before.ts_open + timedelta(minutes=missing + 1)]
        prior = by_time[before.ts_open]
        assert after.gap_minutes == missing and after.window_has_gap
        if missing <= BOUND:
            assert after.bars_seen == min(200, prior.bars_seen + missing + 1)
        else:
            assert after.bars_seen == 1


def test_entries_are_not_blocked_after_a_one_minute_gap_but_are_after_an_outage(gapped, gapped_live) -> None:
    params = StrategyParams.from_config(load_strategy_config())
    timeline = [m for m in gapped_live if isinstance(m, IndicatorSnapshot)]
    for at, missing in CUTS[-2:]:
        first = at - sum(n for a, n in CUTS if a < at)  # the candle after the gap, in ``gapped``
        assert timeline[first].gap_minutes == missing and timeline[first].regime is not Regime.UNKNOWN
        following = [evaluate_entry(s, params).reason for s in timeline[first : first + 45]]
        if missing == 1:
            assert EntryReason.WARMING_UP not in following
        else:
            assert following[: params.warmup_bars - 1] == [EntryReason.WARMING_UP] * (params.warmup_bars - 1)
            assert EntryReason.WARMING_UP not in following[params.warmup_bars - 1 :]


def test_the_bound_comes_from_the_yaml_and_zero_fills_nothing(gapped) -> None:
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    assert raw["data"]["max_filled_gap_minutes"] == BOUND == 15
    raw["data"]["max_filled_gap_minutes"] = 0
    config = config_from_strategy(parse_strategy_config(raw))
    assert config.max_filled_gap == 0
    at = CUTS[0][0]  # the first 1-minute gap
    out = [m for m in history_messages(gapped[: at + 2], config) if isinstance(m, IndicatorSnapshot)]
    assert (out[at].gap_minutes, out[at].bars_seen, out[at - 1].bars_seen) == (1, 1, 200)
