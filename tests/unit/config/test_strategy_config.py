"""``coinpilot.strategy_config``: the shipped v3 YAML, units on every key, fail-fast validation."""

from __future__ import annotations

import copy
from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from coinpilot.contracts import Regime
from coinpilot.errors import ConfigError
from coinpilot.strategy_config import (
    SHIPPED_CONFIG,
    EntryConfig,
    ExitConfig,
    RegimeDetectionConfig,
    StrategyConfig,
    VolatilityConfig,
    load_strategy_config,
    parse_strategy_config,
)

SHIPPED = load_strategy_config()
RAW: dict[str, Any] = yaml.safe_load(SHIPPED_CONFIG.read_text())


def value_at(config: BaseModel, path: str) -> object:
    node: object = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("symbols", ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE")),
        ("regime_detection.bull_threshold_pct", 2.0),
        ("regime_detection.bear_threshold_pct", -2.0),
        ("regime_detection.unknown_fallback", Regime.SIDEWAYS),
        ("regimes.BULL.entry.rsi_14_max", 50),
        ("regimes.SIDEWAYS.entry.rsi_7_trigger", 40),
        ("regimes.SIDEWAYS.entry.ma_proximity_pct", 0.985),
        ("regimes.SIDEWAYS.entry.bb_recovery_sustain_candles", 2),
        ("regimes.BEAR.entry.volume_surge_ratio", 2.0),
        ("regimes.BULL.entry.volume_ratio", 1.0),
        ("regimes.BULL.exit.stop_loss_pct", 0.03),
        ("regimes.SIDEWAYS.exit.trailing_stop_pct", 0.025),
        ("regimes.BEAR.exit.time_limit_hours", 24),
        ("regimes.BEAR.position_size_ratio", 0.7),
        ("risk_management.max_position_size", 0.20),
        ("risk_management.max_daily_loss", 0.03),
        ("risk_management.max_daily_trades", 6),
        ("risk_management.cooldown_after_consecutive_losses", 3),
        ("risk_management.trading_day_boundary_utc", time(0, 0)),
        ("risk_management.volatility.window_hours", 2160),
        ("risk_management.volatility.min_returns", 500),
        ("risk_management.volatility.stale_after_hours", 36),
        ("risk_management.volatility.refit_at_utc", time(0, 5)),
    ],
)
def test_the_shipped_file_holds_the_spec_values(path: str, expected: object) -> None:
    assert value_at(SHIPPED, path) == expected


def test_no_path_means_the_shipped_file() -> None:
    assert load_strategy_config(None) == load_strategy_config(SHIPPED_CONFIG)


def test_the_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SHIPPED.regimes.BULL.exit.stop_loss_pct = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "field", "unit"),
    [
        *[(ExitConfig, f, "FRACTION") for f in ExitConfig.model_fields if f.endswith("_pct")],
        (RegimeDetectionConfig, "bull_threshold_pct", "PERCENT"),
        (RegimeDetectionConfig, "bear_threshold_pct", "PERCENT"),
        (EntryConfig, "ai_prefilter_min_rebound_pct", "PERCENT"),
        (EntryConfig, "min_rsi_7_bounce_pct", "RSI POINTS"),
        (EntryConfig, "rsi_14_max", "RSI POINTS"),
        (EntryConfig, "ma_proximity_pct", "MULTIPLIER"),
        (EntryConfig, "volume_ratio", "MINIMUM"),
        (EntryConfig, "volume_min_ratio", "MINIMUM"),
        (ExitConfig, "time_limit_hours", "HOURS"),
        (VolatilityConfig, "vol_threshold_hourly_pct", "PERCENT per HOUR"),
    ],
)
def test_each_key_states_its_unit(model: type[BaseModel], field: str, unit: str) -> None:
    assert unit in (model.model_fields[field].description or "")


def mutated(path: str, value: object) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "regimes.BULL.exit.stop_loss_pct",
            -0.03,
            "regimes.BULL.exit.stop_loss_pct: Input should be greater than 0",
        ),
        (
            "regimes.BULL.exit.stop_loss_pct",
            1.5,
            "regimes.BULL.exit.stop_loss_pct: Input should be less than 1",
        ),
        ("regimes.SIDEWAYS.entry.rsi_14_max", 120, "regimes.SIDEWAYS.entry.rsi_14_max: Input should be less"),
        ("regimes.BEAR.entry.ma_condition", "above", "regimes.BEAR.entry.ma_condition: Input should be"),
        ("regimes.BEAR.position_size_ratio", 1.2, "regimes.BEAR.position_size_ratio: Input should be less"),
        ("regimes.BULL.exit.stop_loss", 0.03, "regimes.BULL.exit.stop_loss: Extra inputs are not permitted"),
        (
            "risk_management.max_daily_loss",
            0,
            "risk_management.max_daily_loss: Input should be greater than 0",
        ),
        (
            "risk_management.volatility.refit_at_utc",
            5,
            'risk_management.volatility.refit_at_utc: Value error, must be a quoted "HH:MM"',
        ),
        (
            "risk_management.trading_day_boundary_utc",
            "25:00",
            "risk_management.trading_day_boundary_utc: Value error",
        ),
        (
            "risk_management.volatility.min_returns",
            5000,
            "risk_management.volatility: Value error, min_returns",
        ),
        (
            "regime_detection.unknown_fallback",
            "UNKNOWN",
            "regime_detection.unknown_fallback: Input should be",
        ),
        ("symbols", ["BTC"], "symbols: Value error, not Upbit market codes"),
        ("version", 2, "version: Input should be 3"),
    ],
)
def test_an_invalid_value_fails_fast_naming_its_key_path(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_strategy_config(mutated(path, value), source="strategy.yaml")
    assert str(caught.value).startswith(f"strategy.yaml: {message}")


def test_a_missing_regime_block_is_named() -> None:
    raw = copy.deepcopy(RAW)
    del raw["regimes"]["BEAR"]
    with pytest.raises(ConfigError, match=r"regimes\.BEAR: Field required"):
        parse_strategy_config(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "must be a mapping"), ("- a\n- b\n", "must be a mapping"), ("a: [1, 2\n", "not valid YAML")],
)
def test_an_empty_or_broken_file_fails_fast(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "strategy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_strategy_config(path)


def test_a_missing_file_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read strategy config"):
        load_strategy_config(tmp_path / "absent.yaml")


def test_unknown_has_no_block_and_exits_use_the_fallback() -> None:
    assert SHIPPED.regime(Regime.UNKNOWN) is None
    assert SHIPPED.exit_block(Regime.UNKNOWN) == SHIPPED.regimes.SIDEWAYS.exit
    assert SHIPPED.exit_block(Regime.BEAR) == SHIPPED.regimes.BEAR.exit


def test_the_config_round_trips_through_its_own_dump() -> None:
    assert StrategyConfig.model_validate(SHIPPED.model_dump()) == SHIPPED
