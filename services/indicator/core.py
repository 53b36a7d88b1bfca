"""The indicator service's pure core: per-symbol state and one closed 1m candle in, messages out.

    on_candle(state, candle, config) -> Step(state, out, outcome)

``out`` is, in this order: for every hour the candle closes, its ``HourlyCandle`` and the
``RegimeUpdate`` computed from it; then the candle's ``IndicatorSnapshot``. An hour closes when
its ``:59`` minute arrives or, if that minute is missing, when the first candle of a later hour
arrives. The snapshot carries the regime in force *after* those closes, so "the regime at event
time T" is the regime of every hour that ended by T, whichever way the hour closed.

Every value is a pure function of bounded windows (the last 200 rows of 1m history, the last 200
closed hours), so ``warm_state`` (restart from stored candles) and ``history_messages`` (batch
over a whole file) give exactly the messages a candle-by-candle run gives. A gap of at most
``max_filled_gap`` minutes is filled in the 1m window with no-trade minutes (flat at the previous
close, volume 0): an exchange sends no candle for a minute without trades, and such a minute is
history, not a hole. A longer gap is an outage and starts the warm-up again. Hourly candles and
the regime stay the aggregates of the candles received.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from coinpilot.contracts import Contract, HourlyCandle, IndicatorSnapshot, MinuteCandle, Regime, RegimeUpdate
from coinpilot.indicators import (
    DEFAULT_REGIME_PARAMS,
    DEFAULT_REGIME_RULE,
    MAX_FILLED_GAP,
    WINDOW,
    HistoryResult,
    HourBar,
    IndicatorParams,
    MinuteValues,
    MinuteWindow,
    RegimeParams,
    RegimeReading,
    RegimeRule,
    closes_hour,
    compute_history,
    hour_start,
    regime_from_closes,
    resample_hourly,
)

INDICATOR_FIELDS: tuple[str, ...] = (
    "rsi_14",
    "rsi_7",
    "rsi_7_prev",
    "rsi_7_min_lookback",
    "ma_20",
    "bb_mid",
    "bb_upper",
    "bb_lower",
    "vol_ratio",
    "recent_vol_ratios",
    "bb_touch_recovery",
)
"""Snapshot fields that may be missing (listed in ``IndicatorSnapshot.missing`` when ``None``)."""


@dataclass(frozen=True, slots=True)
class IndicatorConfig:
    """All the core sees: lookbacks per regime (strategy YAML entry blocks), the regime rule, and
    the longest gap filled with no-trade minutes (``data.max_filled_gap_minutes``; 0: none)."""

    regimes: RegimeParams = DEFAULT_REGIME_PARAMS
    rule: RegimeRule = DEFAULT_REGIME_RULE
    window: int = WINDOW
    max_filled_gap: int = MAX_FILLED_GAP


DEFAULT_CONFIG = IndicatorConfig()


@dataclass(frozen=True, slots=True)
class HourState:
    """The forming hour (``Decimal`` prices), the last closed hourly closes, the regime in force."""

    forming: HourBar[Decimal] | None = None
    closes: tuple[float, ...] = ()
    reading: RegimeReading | None = None

    @property
    def regime(self) -> Regime:
        return Regime.UNKNOWN if self.reading is None else self.reading.regime


@dataclass(frozen=True, slots=True)
class SymbolState:
    symbol: str
    window: MinuteWindow = field(default_factory=MinuteWindow)
    hours: HourState = field(default_factory=HourState)
    last_open: datetime | None = None


class CandleOutcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"  # the last processed candle again (a redelivery)
    STALE = "stale"  # older than the last processed candle: ignored


@dataclass(frozen=True, slots=True)
class Step:
    state: SymbolState
    out: tuple[Contract, ...] = ()
    outcome: CandleOutcome = CandleOutcome.PROCESSED


def _ms(ts: datetime) -> int:
    return int(ts.timestamp()) * 1000


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC)


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


def initial_state(symbol: str, config: IndicatorConfig = DEFAULT_CONFIG) -> SymbolState:
    window = MinuteWindow(size=config.window, max_filled_gap=config.max_filled_gap)
    return SymbolState(symbol=symbol, window=window)


def on_candle(state: SymbolState, candle: MinuteCandle, config: IndicatorConfig = DEFAULT_CONFIG) -> Step:
    """Advance ``state`` by one closed 1m candle of ``state.symbol``."""
    if candle.symbol != state.symbol:
        raise ValueError(f"candle of {candle.symbol} handed to the state of {state.symbol}")
    if state.last_open is not None and candle.ts_open <= state.last_open:
        outcome = CandleOutcome.DUPLICATE if candle.ts_open == state.last_open else CandleOutcome.STALE
        return Step(state, (), outcome)
    ts = _ms(candle.ts_open)
    out: list[Contract] = []
    hours = state.hours
    if hours.forming is not None and hour_start(ts) != hours.forming.start_ms:
        hours = _close_hour(hours, state.symbol, config.rule, out)
    row = (candle.high, candle.low, candle.close, candle.volume)
    forming = HourBar.first(ts, candle.open, *row) if hours.forming is None else hours.forming.add(*row)
    hours = replace(hours, forming=forming)
    if closes_hour(ts):
        hours = _close_hour(hours, state.symbol, config.rule, out)
    window = state.window.push(ts, float(candle.close), float(candle.volume))
    out.append(snapshot(candle, window.values(_params(hours, config)), hours, config))
    return Step(SymbolState(state.symbol, window, hours, candle.ts_open), tuple(out))


def _params(hours: HourState, config: IndicatorConfig) -> IndicatorParams:
    return config.regimes.for_regime(hours.regime)


def _close_hour(hours: HourState, symbol: str, rule: RegimeRule, out: list[Contract]) -> HourState:
    bar = hours.forming
    if bar is None:
        return hours
    closes = (*hours.closes, float(bar.close))[-rule.hours_kept :]
    reading = regime_from_closes(closes, rule)
    out.append(hourly_candle(symbol, bar))
    out.append(regime_update(symbol, bar.start_ms, reading))
    return HourState(None, closes, reading)


def hourly_candle(symbol: str, bar: HourBar[Decimal]) -> HourlyCandle:
    start = _utc(bar.start_ms)
    return HourlyCandle(
        symbol=symbol,
        ts_open=start,
        ts_event=start + timedelta(hours=1),
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        minute_count=bar.count,
    )


def regime_update(symbol: str, hour_start_ms: int, reading: RegimeReading) -> RegimeUpdate:
    """The regime after the hour starting at ``hour_start_ms`` closed; its event time is the hour's end."""
    start = _utc(hour_start_ms)
    return RegimeUpdate(
        ts_event=start + timedelta(hours=1),
        symbol=symbol,
        regime=reading.regime,
        ma50=_opt(reading.ma50),
        ma200=_opt(reading.ma200),
        diff_pct=_opt(reading.diff_pct),
        hourly_count=reading.hourly_count,
        as_of=start,
    )


def snapshot(
    candle: MinuteCandle, values: MinuteValues, hours: HourState, config: IndicatorConfig
) -> IndicatorSnapshot:
    params = _params(hours, config)
    fields: dict[str, object] = {
        "rsi_14": _opt(values.rsi_14),
        "rsi_7": _opt(values.rsi_7),
        "rsi_7_prev": _opt(values.rsi_7_prev),
        "rsi_7_min_lookback": _opt(values.rsi_7_min_lookback),
        "ma_20": _opt(values.ma),
        "bb_mid": _opt(values.bb_mid),
        "bb_upper": _opt(values.bb_upper),
        "bb_lower": _opt(values.bb_lower),
        "vol_ratio": _opt(values.vol_ratio),
        "recent_vol_ratios": values.recent_vol_ratios,
        "bb_touch_recovery": values.bb_touch_recovery,
    }
    missing = tuple(name for name in INDICATOR_FIELDS if fields[name] is None)
    if fields["recent_vol_ratios"] is None:
        fields["recent_vol_ratios"] = ()
    reading = hours.reading
    return IndicatorSnapshot(
        ts_event=candle.ts_event,
        symbol=candle.symbol,
        candle=candle,
        regime=hours.regime,
        regime_diff_pct=None if reading is None else _opt(reading.diff_pct),
        rsi_7_recovery_lookback=params.rsi_lookback,
        ma_period=params.ma_period,
        bb_touch_lookback=params.touch_lookback,
        bb_recovery_sustain_candles=params.sustain,
        bars_seen=values.bars_seen,
        gap_minutes=values.gap_minutes,
        window_has_gap=values.window_has_gap,
        missing=missing,
        **fields,  # type: ignore[arg-type]
    )


def warm_state(
    symbol: str,
    recent: Sequence[MinuteCandle],
    hours: Sequence[HourlyCandle],
    config: IndicatorConfig = DEFAULT_CONFIG,
) -> SymbolState:
    """The state after stored history, without replaying it candle by candle (the restart path).

    ``recent``: the last ``config.window`` stored 1m candles (oldest first, fewer if that is all
    there is). ``hours``: the hourly buckets of the stored 1m candles up to and including
    ``recent[-1]``'s hour, complete or not, oldest first, at least ``config.rule.hours_kept`` + 1
    of them (or all there are). The last bucket is the forming hour unless ``recent[-1]`` is its
    ``:59`` minute.
    """
    if not recent:
        return initial_state(symbol, config)
    if any(c.symbol != symbol for c in (*recent, *hours)):
        raise ValueError(f"warm_state({symbol}) got candles of another symbol")
    last = recent[-1]
    tail = recent[-config.window :]
    window = MinuteWindow.from_rows(
        [_ms(c.ts_open) for c in tail],
        [float(c.close) for c in tail],
        [float(c.volume) for c in tail],
        size=config.window,
        max_filled_gap=config.max_filled_gap,
    )
    bars = list(hours)
    forming: HourBar[Decimal] | None = None
    last_ms = _ms(last.ts_open)
    if bars and _ms(bars[-1].ts_open) > last_ms:
        raise ValueError("hours reach past the last recent candle")
    if bars and _ms(bars[-1].ts_open) == hour_start(last_ms) and not closes_hour(last_ms):
        b = bars.pop()
        forming = HourBar(_ms(b.ts_open), b.open, b.high, b.low, b.close, b.volume, b.minute_count)
    closes = tuple(float(b.close) for b in bars[-config.rule.hours_kept :])
    reading = regime_from_closes(closes, config.rule) if closes else None
    return SymbolState(symbol, window, HourState(forming, closes, reading), last.ts_open)


def hourly_buckets(candles: Sequence[MinuteCandle]) -> list[HourlyCandle]:
    """Every hourly bucket of ``candles``, the forming last one included (what ``warm_state`` takes)."""
    if not candles:
        return []
    bars = resample_hourly(
        ((_ms(c.ts_open), c.open, c.high, c.low, c.close, c.volume) for c in candles), include_forming=True
    )
    return [hourly_candle(candles[0].symbol, bar) for bar in bars]


def run_candles(
    state: SymbolState, candles: Sequence[MinuteCandle], config: IndicatorConfig = DEFAULT_CONFIG
) -> tuple[SymbolState, list[Contract]]:
    """Fold ``on_candle`` over ``candles``: the live path, in process (tests, backtests)."""
    out: list[Contract] = []
    for candle in candles:
        step = on_candle(state, candle, config)
        state = step.state
        out.extend(step.out)
    return state, out


@dataclass(frozen=True, slots=True)
class ComputedHistory:
    """One symbol's whole history computed by the vectorised batch path, read out message by message.

    ``hours_closing(i)`` and ``snapshot_at(i, candle)`` are the messages a live run emits for candle
    ``i``; :func:`history_messages` yields them all, the fast backtest only those it needs.
    """

    symbol: str
    result: HistoryResult
    bars: tuple[HourBar[Decimal], ...]  # the closed hours with exact (Decimal) prices
    closes_at: dict[int, tuple[int, ...]]  # candle index -> the hours its arrival closes
    config: IndicatorConfig

    @classmethod
    def compute(
        cls,
        symbol: str,
        ts_ms: npt.NDArray[np.int64],
        floats: Mapping[str, npt.NDArray[np.float64]],
        exact_bars: Callable[[int], Sequence[HourBar[Decimal]]],
        config: IndicatorConfig = DEFAULT_CONFIG,
    ) -> ComputedHistory:
        """``floats``: open/high/low/close/volume as float64; ``exact_bars(n)``: the first ``n``
        hourly bars with the candles' own ``Decimal`` prices (what the live path aggregates)."""
        result = compute_history(
            ts_ms,
            floats["open"],
            floats["high"],
            floats["low"],
            floats["close"],
            floats["volume"],
            params=config.regimes,
            rule=config.rule,
            size=config.window,
            max_filled_gap=config.max_filled_gap,
        )
        closes_at: dict[int, list[int]] = {}
        for k, i in enumerate(result.hour_closed_at.tolist()):
            closes_at.setdefault(i, []).append(k)
        return cls(
            symbol,
            result,
            tuple(exact_bars(len(result.hours))),
            {i: tuple(ks) for i, ks in closes_at.items()},
            config,
        )

    def hours_closing(self, i: int) -> list[Contract]:
        """The ``HourlyCandle`` and ``RegimeUpdate`` of every hour candle ``i`` closes."""
        out: list[Contract] = []
        for k in self.closes_at.get(i, ()):
            out.append(hourly_candle(self.symbol, self.bars[k]))
            out.append(regime_update(self.symbol, self.bars[k].start_ms, self.result.readings[k]))
        return out

    def reading_index(self, i: int) -> int:
        """The last hour closed by candle ``i`` (its regime is in force), -1 before the first."""
        return int(np.searchsorted(self.result.hour_closed_at, i, side="right")) - 1

    def snapshot_at(
        self, i: int, candle: MinuteCandle, reading_index: int | None = None
    ) -> IndicatorSnapshot:
        result, batch = self.result, self.result.batch
        k = self.reading_index(i) if reading_index is None else reading_index
        reading = result.readings[k] if k >= 0 else None
        touch = int(result.bb_touch_recovery[i])
        recent = batch.recent_vol_ratios[i]
        values = MinuteValues(
            rsi_14=float(batch.rsi_14[i]),
            rsi_7=float(batch.rsi_7_tail[i, -1]),
            rsi_7_prev=float(batch.rsi_7_tail[i, -2]),
            rsi_7_min_lookback=float(result.rsi_7_min_lookback[i]),
            ma=float(result.ma[i]),
            bb_mid=float(batch.bb_mid[i]),
            bb_upper=float(batch.bb_upper[i]),
            bb_lower=float(batch.bb_lower[i]),
            vol_ratio=float(batch.vol_ratio[i]),
            recent_vol_ratios=None if np.isnan(recent[0]) else tuple(float(v) for v in recent),
            bb_touch_recovery=None if touch < 0 else bool(touch),
            rows=int(batch.rows[i]),
            bars_seen=int(batch.bars_seen[i]),
            gap_minutes=int(batch.gap_minutes[i]),
            window_has_gap=bool(batch.window_has_gap[i]),
        )
        return snapshot(candle, values, HourState(None, (), reading), self.config)


def history_messages(
    candles: Sequence[MinuteCandle], config: IndicatorConfig = DEFAULT_CONFIG
) -> Iterator[Contract]:
    """The messages a live run over ``candles`` (one symbol, from an empty state) emits, computed
    by the vectorised batch path (``coinpilot.indicators.compute_history``)."""
    if not candles:
        return
    ts = np.array([_ms(c.ts_open) for c in candles], dtype=np.int64)
    floats = {
        name: np.array([float(getattr(c, name)) for c in candles])
        for name in ("open", "high", "low", "close", "volume")
    }
    rows = [(int(t), c.open, c.high, c.low, c.close, c.volume) for t, c in zip(ts, candles, strict=True)]
    history = ComputedHistory.compute(
        candles[0].symbol, ts, floats, lambda n: resample_hourly(rows)[:n], config
    )
    regime_index = -1
    for i, candle in enumerate(candles):
        closing = history.hours_closing(i)
        yield from closing
        if closing:
            regime_index = history.closes_at[i][-1]
        yield history.snapshot_at(i, candle, regime_index)
