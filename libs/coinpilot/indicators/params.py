"""Frozen parameters of the indicator maths: the per-regime lookbacks and the regime rule.

Values and their normalisation are BEHAVIOUR §2.3 and §0.2: a lookback of 0 or ``None`` in the
YAML means the code default, and the ``max(...)`` floors keep every window meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from coinpilot.contracts.enums import Regime

WINDOW = 200
"""Candles in the 1m window every value is computed on (the original's ``LIMIT 200``)."""
BB_PERIOD = 20
BB_WIDTH = 2.0
VOLUME_PERIOD = 20
RECENT_VOLUME_RATIOS = 5
RSI_PERIOD = 14
RSI_SHORT_PERIOD = 7
MAX_FILLED_GAP = 15
"""Longest gap filled with no-trade minutes by default (``data.max_filled_gap_minutes``, README "Gaps")."""


@dataclass(frozen=True, slots=True)
class IndicatorParams:
    """The regime-dependent inputs of the 1m indicators (entry config of the regime in force)."""

    ma_period: int = 20
    rsi_7_recovery_lookback: int = 5
    bb_touch_lookback: int = 30
    bb_recovery_sustain_candles: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.ma_period <= WINDOW:
            raise ValueError(f"ma_period must be in [1, {WINDOW}], got {self.ma_period}")
        if not 0 <= self.rsi_7_recovery_lookback <= WINDOW:
            raise ValueError(f"rsi_7_recovery_lookback must be in [0, {WINDOW}]")
        # bb_lower exists from the 20th row of the window on; the touch lookback must stay inside.
        if not 0 <= self.bb_touch_lookback <= WINDOW - BB_PERIOD + 1:
            raise ValueError(f"bb_touch_lookback must be in [0, {WINDOW - BB_PERIOD + 1}]")
        if not 0 <= self.bb_recovery_sustain_candles < WINDOW - BB_PERIOD:
            raise ValueError("bb_recovery_sustain_candles out of range")

    @property
    def rsi_lookback(self) -> int:
        """``L = max(2, rsi_7_recovery_lookback or 5)``."""
        return max(2, self.rsi_7_recovery_lookback or 5)

    @property
    def touch_lookback(self) -> int:
        """``max(1, bb_touch_lookback or 30)``."""
        return max(1, self.bb_touch_lookback or 30)

    @property
    def sustain(self) -> int:
        """``max(1, bb_recovery_sustain_candles or 1)``."""
        return max(1, self.bb_recovery_sustain_candles or 1)


DEFAULT_PARAMS = IndicatorParams()


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """``IndicatorParams`` per regime; a regime without an entry (UNKNOWN) uses the code defaults."""

    by_regime: Mapping[Regime, IndicatorParams] = field(
        default_factory=lambda: MappingProxyType(
            {
                Regime.BULL: IndicatorParams(),
                Regime.SIDEWAYS: IndicatorParams(bb_recovery_sustain_candles=2),
                Regime.BEAR: IndicatorParams(),
            }
        )
    )
    default: IndicatorParams = DEFAULT_PARAMS

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_regime", MappingProxyType(dict(self.by_regime)))

    def for_regime(self, regime: Regime) -> IndicatorParams:
        return self.by_regime.get(regime, self.default)

    def all(self) -> tuple[IndicatorParams, ...]:
        return (self.default, *self.by_regime.values())

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.by_regime.items())), self.default))


DEFAULT_REGIME_PARAMS = RegimeParams()


@dataclass(frozen=True, slots=True)
class RegimeRule:
    """BEHAVIOUR §0.2 ``regime_detection`` (thresholds in percent) and the closed-hour minimum."""

    ma_fast_period: int = 50
    ma_slow_period: int = 200
    bull_threshold_pct: float = 2.0
    bear_threshold_pct: float = -2.0
    min_hourly_candles: int = 200

    def __post_init__(self) -> None:
        if not 1 <= self.ma_fast_period <= self.ma_slow_period:
            raise ValueError("need 1 <= ma_fast_period <= ma_slow_period")
        if self.min_hourly_candles < 1:
            raise ValueError("min_hourly_candles must be >= 1")
        if self.bear_threshold_pct > self.bull_threshold_pct:
            raise ValueError("bear_threshold_pct must be <= bull_threshold_pct")

    @property
    def hours_kept(self) -> int:
        """Closed hourly closes a regime is a function of (enough for the minimum and the slow MA)."""
        return max(self.min_hourly_candles, self.ma_slow_period)


DEFAULT_REGIME_RULE = RegimeRule()
