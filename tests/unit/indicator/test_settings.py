"""The core's frozen config comes from the strategy YAML (BEHAVIOUR §0.2, §0.3)."""

from __future__ import annotations

from coinpilot.contracts import Regime
from coinpilot.indicators import IndicatorParams, RegimeRule
from coinpilot.strategy_config import load_strategy_config
from services.indicator.settings import config_from_strategy, load_config


def test_the_shipped_yaml_gives_the_documented_lookbacks_and_rule() -> None:
    config, ttl = load_config(None)
    assert config.regimes.for_regime(Regime.SIDEWAYS) == IndicatorParams(bb_recovery_sustain_candles=2)
    assert config.regimes.for_regime(Regime.BULL) == IndicatorParams()
    assert config.regimes.for_regime(Regime.BEAR) == IndicatorParams()
    assert config.regimes.for_regime(Regime.UNKNOWN) == IndicatorParams()  # code defaults 20, 5, 30, 1
    assert config.rule == RegimeRule()
    assert ttl == 7200


def test_changed_yaml_values_reach_the_core() -> None:
    strategy = load_strategy_config(None)
    sideways = strategy.regimes.SIDEWAYS
    entry = sideways.entry.model_copy(update={"bb_touch_lookback": 12, "ma_period": 30})
    regimes = strategy.regimes.model_copy(update={"SIDEWAYS": sideways.model_copy(update={"entry": entry})})
    detection = strategy.regime_detection.model_copy(update={"bull_threshold_pct": 3.5})
    changed = strategy.model_copy(update={"regimes": regimes, "regime_detection": detection})
    config = config_from_strategy(changed)
    params = config.regimes.for_regime(Regime.SIDEWAYS)
    assert (params.touch_lookback, params.ma_period, params.sustain) == (12, 30, 2)
    assert config.rule.bull_threshold_pct == 3.5
