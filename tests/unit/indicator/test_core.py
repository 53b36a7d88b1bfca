"""The indicator core: hour closing, outputs and their order, redelivery, regimes, restart."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from coinpilot.contracts import HourlyCandle, IndicatorSnapshot, MinuteCandle, Regime, RegimeUpdate
from coinpilot.indicators import IndicatorParams, RegimeParams
from services.indicator.core import (
    DEFAULT_CONFIG,
    INDICATOR_FIELDS,
    CandleOutcome,
    IndicatorConfig,
    history_messages,
    hourly_buckets,
    initial_state,
    on_candle,
    run_candles,
    warm_state,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
D = Decimal


def candle(
    minute: int,
    close: str = "100",
    *,
    high: str | None = None,
    low: str | None = None,
    volume: str = "1",
    symbol: str = "KRW-BTC",
) -> MinuteCandle:
    start = T0 + timedelta(minutes=minute)
    c = D(close)
    return MinuteCandle(
        symbol=symbol,
        ts_open=start,
        ts_event=start + timedelta(minutes=1),
        open=c,
        high=D(high) if high else c,
        low=D(low) if low else c,
        close=c,
        volume=D(volume),
    )


def kinds(out: tuple) -> list[str]:
    return [type(m).__name__ for m in out]


def test_the_59th_minute_closes_the_hour_hourly_candle_then_regime_then_snapshot() -> None:
    candles = [candle(m, str(100 + m), high=str(101 + m), low=str(99 + m)) for m in range(60)]
    state, out = run_candles(initial_state("KRW-BTC"), candles[:-1])
    assert {type(m) for m in out} == {IndicatorSnapshot}
    step = on_candle(state, candles[-1])
    assert kinds(step.out) == ["HourlyCandle", "RegimeUpdate", "IndicatorSnapshot"]
    hourly, regime, snapshot = step.out
    assert hourly == HourlyCandle(
        symbol="KRW-BTC",
        ts_open=T0,
        ts_event=T0 + timedelta(hours=1),
        open=D(100),
        high=D(160),
        low=D(99),
        close=D(159),
        volume=D(60),
        minute_count=60,
    )
    assert regime == RegimeUpdate(
        ts_event=T0 + timedelta(hours=1), symbol="KRW-BTC", regime=Regime.UNKNOWN, hourly_count=1, as_of=T0
    )
    assert snapshot.regime is Regime.UNKNOWN and snapshot.candle == candles[-1]
    assert step.state.hours.forming is None


def test_an_hour_missing_its_59th_minute_closes_when_a_later_hour_starts() -> None:
    state, _ = run_candles(initial_state("KRW-BTC"), [candle(m) for m in range(41)])  # 00:00 .. 00:40
    step = on_candle(state, candle(65))  # 01:05: 24 minutes missing
    assert kinds(step.out) == ["HourlyCandle", "RegimeUpdate", "IndicatorSnapshot"]
    hourly, regime, snapshot = step.out
    assert (hourly.ts_open, hourly.minute_count) == (T0, 41)
    assert regime.as_of == T0 and regime.ts_event == T0 + timedelta(hours=1)
    assert (snapshot.gap_minutes, snapshot.bars_seen, snapshot.window_has_gap) == (24, 1, True)


def test_a_late_59th_minute_closes_two_hours_at_once_in_order() -> None:
    state, _ = run_candles(initial_state("KRW-BTC"), [candle(10)])
    step = on_candle(state, candle(119))  # 01:59 after 00:10
    assert kinds(step.out) == [
        "HourlyCandle",
        "RegimeUpdate",
        "HourlyCandle",
        "RegimeUpdate",
        "IndicatorSnapshot",
    ]
    assert [m.ts_open for m in step.out if isinstance(m, HourlyCandle)] == [T0, T0 + timedelta(hours=1)]
    assert step.out[3].hourly_count == 2


@pytest.mark.parametrize(
    ("minute", "outcome"),
    [
        pytest.param(4, CandleOutcome.DUPLICATE, id="the-last-candle-again"),
        pytest.param(2, CandleOutcome.STALE, id="an-older-candle"),
    ],
)
def test_a_candle_at_or_before_the_last_one_changes_nothing(minute: int, outcome: CandleOutcome) -> None:
    state, _ = run_candles(initial_state("KRW-BTC"), [candle(m) for m in range(5)])
    step = on_candle(state, candle(minute, "999"))
    assert (step.state, step.out, step.outcome) == (state, (), outcome)


def test_a_candle_of_another_symbol_is_refused() -> None:
    with pytest.raises(ValueError, match="KRW-ETH"):
        on_candle(initial_state("KRW-BTC"), candle(0, symbol="KRW-ETH"))


def test_the_first_snapshot_says_what_is_missing() -> None:
    snapshot = on_candle(initial_state("KRW-BTC"), candle(0)).out[-1]
    assert snapshot.missing == INDICATOR_FIELDS
    assert (snapshot.rsi_14, snapshot.recent_vol_ratios, snapshot.bb_touch_recovery) == (None, (), None)
    assert (snapshot.bars_seen, snapshot.gap_minutes, snapshot.window_has_gap) == (1, 0, False)


def test_flat_prices_leave_rsi_missing_not_made_up() -> None:
    _, out = run_candles(initial_state("KRW-BTC"), [candle(m) for m in range(60)])
    snapshot = out[-1]
    assert snapshot.rsi_14 is None and "rsi_14" in snapshot.missing
    assert snapshot.ma_20 == 100.0 and snapshot.vol_ratio == 1.0


def test_regime_is_unknown_until_200_closed_hours_then_known(btc_slice_live) -> None:
    out = btc_slice_live
    updates = [m for m in out if isinstance(m, RegimeUpdate)]
    assert all(u.regime is Regime.UNKNOWN for u in updates[:199])
    assert updates[199].regime is not Regime.UNKNOWN and updates[199].hourly_count == 200
    assert {u.hourly_count for u in updates[200:]} == {200}
    assert updates[199].ma200 == pytest.approx(
        sum(float(h.close) for h in out if isinstance(h, HourlyCandle) and h.ts_open <= updates[199].as_of)
        / 200
    )
    regime_now = Regime.UNKNOWN
    for m in out:
        if isinstance(m, RegimeUpdate):
            regime_now = m.regime
        elif isinstance(m, IndicatorSnapshot):
            assert m.regime is regime_now  # every snapshot carries the regime of the hours closed by then


def test_all_three_regimes_appear_on_the_march_2023_data(btc_2023_candles) -> None:
    """The whole 46-day file, through the batch path (equal to the live path: see test_parity)."""
    updates = [m for m in history_messages(btc_2023_candles) if isinstance(m, RegimeUpdate)]
    counts = Counter(u.regime for u in updates)
    assert counts[Regime.UNKNOWN] == 199
    assert counts[Regime.BULL] and counts[Regime.SIDEWAYS] and counts[Regime.BEAR]
    for u in updates:
        if u.regime is Regime.BULL:
            assert u.diff_pct > 2.0
        elif u.regime is Regime.BEAR:
            assert u.diff_pct < -2.0
        elif u.regime is Regime.SIDEWAYS:
            assert -2.0 <= u.diff_pct <= 2.0


def test_snapshots_use_the_lookbacks_of_the_regime_in_force(btc_slice) -> None:
    config = IndicatorConfig(
        regimes=RegimeParams(
            by_regime={
                Regime.BULL: IndicatorParams(),
                Regime.SIDEWAYS: IndicatorParams(bb_recovery_sustain_candles=2),
                Regime.BEAR: IndicatorParams(rsi_7_recovery_lookback=8),
            }
        )
    )
    snapshots = [m for m in history_messages(btc_slice, config) if isinstance(m, IndicatorSnapshot)]
    expected = {Regime.UNKNOWN: (5, 1), Regime.SIDEWAYS: (5, 2), Regime.BULL: (5, 1), Regime.BEAR: (8, 1)}
    seen = {s.regime for s in snapshots}
    assert Regime.SIDEWAYS in seen and Regime.UNKNOWN in seen
    for s in snapshots:
        assert (s.rsi_7_recovery_lookback, s.bb_recovery_sustain_candles) == expected[s.regime]


def test_the_batch_path_emits_exactly_the_live_messages_across_the_gap(btc_slice, btc_slice_live) -> None:
    live = btc_slice_live
    assert list(history_messages(btc_slice)) == live
    assert max(m.gap_minutes for m in live if isinstance(m, IndicatorSnapshot)) == 80


def cut_points(candles: list[MinuteCandle]) -> list[int]:
    gap = next(
        i
        for i in range(1, len(candles))
        if candles[i].ts_open - candles[i - 1].ts_open > timedelta(minutes=1)
    )
    first_known_hour = 200 * 60 - 15  # the 200th hour closes around here
    at_59 = next(i for i in range(5_000, len(candles)) if candles[i].ts_open.minute == 59)
    return [1, 150, 250, at_59, at_59 + 1, gap - 1, gap, gap + 1, first_known_hour, first_known_hour + 30]


def test_a_restart_from_stored_history_continues_exactly_like_an_uninterrupted_run(
    btc_slice, btc_slice_live
) -> None:
    """Warm from what market_data would hold (last 200 candles + hourly buckets), then continue."""
    live = btc_slice_live
    by_candle: dict[datetime, list] = {}
    current: list = []
    for m in live:
        current.append(m)
        if isinstance(m, IndicatorSnapshot):
            by_candle[m.candle.ts_open] = current
            current = []
    for cut in cut_points(btc_slice):
        stored = btc_slice[:cut]
        state = warm_state("KRW-BTC", stored[-DEFAULT_CONFIG.window :], hourly_buckets(stored))
        _, resumed = run_candles(state, btc_slice[cut : cut + 600])
        expected = [m for c in btc_slice[cut : cut + 600] for m in by_candle[c.ts_open]]
        assert resumed == expected, f"restart after candle {cut}"
