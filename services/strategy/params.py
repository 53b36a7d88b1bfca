"""The frozen parameters the strategy core decides with, built from the strategy YAML.

Prices are compared in ``Decimal`` (exact boundaries such as "stop at exactly 97.97"), so the
fractions and multipliers of the YAML become ``Decimal`` here through their shortest text form
(``0.03`` -> ``Decimal("0.03")``). RSI levels and volume ratios stay floats, as the indicators are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType

from coinpilot.contracts import Regime
from coinpilot.strategy_config import TRADED_REGIMES, EntryConfig, ExitConfig, StrategyConfig

DEFAULT_MA_PROXIMITY = Decimal("0.97")


def dec(value: float) -> Decimal:
    """A config float as the decimal it was written as (``0.1`` -> ``Decimal("0.1")``)."""
    return Decimal(repr(float(value)))


@dataclass(frozen=True, slots=True)
class EntryRules:
    """§3.2 for one regime. RSI values are RSI points; volume values are minimum ratios."""

    rsi_14_max: float
    rsi_7_trigger: float
    rsi_7_recover: float
    min_rsi_7_bounce: float | None = None
    ma_condition: str = "none"
    ma_proximity: Decimal = DEFAULT_MA_PROXIMITY
    bb_enabled: bool = False
    require_price_above_bb_lower: bool = False
    volume_ratio_min: float | None = None
    volume_min_ratio: float | None = None
    volume_surge_check: bool = False
    volume_surge_ratio: float = 2.0

    @classmethod
    def from_config(cls, entry: EntryConfig) -> EntryRules:
        return cls(
            rsi_14_max=entry.rsi_14_max,
            rsi_7_trigger=entry.rsi_7_trigger,
            rsi_7_recover=entry.rsi_7_recover,
            min_rsi_7_bounce=entry.min_rsi_7_bounce_pct,
            ma_condition=entry.ma_condition,
            ma_proximity=DEFAULT_MA_PROXIMITY
            if entry.ma_proximity_pct is None
            else dec(entry.ma_proximity_pct),
            bb_enabled=entry.bb_enabled,
            require_price_above_bb_lower=entry.require_price_above_bb_lower,
            volume_ratio_min=entry.volume_ratio,
            volume_min_ratio=entry.volume_min_ratio,
            volume_surge_check=entry.volume_surge_check,
            volume_surge_ratio=entry.volume_surge_ratio,
        )


@dataclass(frozen=True, slots=True)
class ExitRules:
    """§3.4 for one regime. Every fraction is a Decimal fraction (0.03 = 3 %)."""

    take_profit: Decimal
    stop_loss: Decimal
    trailing_stop: Decimal
    trailing_activation: Decimal
    rsi_overbought: float
    rsi_exit_min_profit: Decimal
    time_limit: timedelta

    @classmethod
    def from_config(cls, exit_: ExitConfig) -> ExitRules:
        return cls(
            take_profit=dec(exit_.take_profit_pct),
            stop_loss=dec(exit_.stop_loss_pct),
            trailing_stop=dec(exit_.trailing_stop_pct),
            trailing_activation=dec(exit_.trailing_stop_activation_pct),
            rsi_overbought=exit_.rsi_overbought,
            rsi_exit_min_profit=dec(exit_.rsi_exit_min_profit_pct),
            time_limit=exit_.time_limit,
        )

    def with_stop_loss(self, stop_loss: Decimal) -> ExitRules:
        return replace(self, stop_loss=stop_loss)


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """Everything the strategy core reads. Build with :meth:`from_config` (or directly in tests).

    ``pending_timeout``: an entry or exit signal counts as pending (no new signal of that symbol)
    until its fill or rejection arrives, or until this much event time has passed since it fired
    (a safety net for a lost message; risk's own pending-order check still blocks a duplicate).
    """

    entry: Mapping[Regime, EntryRules]
    exit: Mapping[Regime, ExitRules]
    unknown_fallback: Regime = Regime.SIDEWAYS
    warmup_bars: int = 40
    pending_timeout: timedelta = field(default=timedelta(minutes=10))

    @classmethod
    def from_config(
        cls,
        config: StrategyConfig,
        *,
        warmup_bars: int = 40,
        pending_timeout: timedelta = timedelta(minutes=10),
    ) -> StrategyParams:
        blocks = {r: getattr(config.regimes, r.value) for r in TRADED_REGIMES}
        entry = {r: EntryRules.from_config(b.entry) for r, b in blocks.items()}
        exit_ = {r: ExitRules.from_config(b.exit) for r, b in blocks.items()}
        return cls(
            entry=MappingProxyType(entry),
            exit=MappingProxyType(exit_),
            unknown_fallback=config.regime_detection.unknown_fallback,
            warmup_bars=warmup_bars,
            pending_timeout=pending_timeout,
        )

    def exit_rules(self, regime: Regime) -> ExitRules:
        """The exit block of ``regime``; UNKNOWN (or an unconfigured regime) uses the fallback's."""
        rules = self.exit.get(regime)
        return rules if rules is not None else self.exit[self.unknown_fallback]
