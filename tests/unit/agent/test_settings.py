"""Agent settings: sources, routing from the environment names, parameters from the strategy YAML."""

from __future__ import annotations

import pytest

from coinpilot.contracts import Regime
from coinpilot.strategy_config import load_strategy_config, parse_strategy_config
from services.agent.recording import CallSource
from services.agent.routing import Route, choose_route
from services.agent.settings import AgentSettings, load_params, params_from_strategy


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "LLM_MODE",
        "LLM_PROVIDER",
        "COINPILOT_LLM_MODE_SOURCE",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"COINPILOT_{name}", raising=False)


def test_no_api_key_means_the_offline_rules_reviewer() -> None:
    settings = AgentSettings()
    assert settings.effective_source() is CallSource.RULES
    assert choose_route("KRW-BTC", "m", settings.routing()) == Route("rules", "rules-v1", "primary")


def test_the_original_environment_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MODE", "prod")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    settings = AgentSettings()
    assert settings.effective_source() is CallSource.LIVE
    assert choose_route("KRW-BTC", "m", settings.routing()).model_used == (
        "anthropic:claude-sonnet-4-5-20250929 (primary)"
    )
    assert "sk-test" not in repr(settings)


def test_replay_stays_replay_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINPILOT_LLM_MODE_SOURCE", "replay")
    assert AgentSettings().effective_source() is CallSource.REPLAY


def test_an_empty_key_is_no_key() -> None:
    assert AgentSettings(openai_api_key="").keys() == frozenset()


def test_parameters_come_from_the_shipped_strategy_file() -> None:
    params = load_params(None)
    bear = params.for_regime(Regime.BEAR)
    assert (bear.prefilter.max_downtrend_ratio, bear.prefilter.min_rebound_pct) == (0.85, 0.4)
    assert (bear.guard.cooldown_minutes_3, bear.guard.max_calls_per_hour, bear.guard.error_block_minutes) == (
        15,
        20,
        30,
    )


def test_a_changed_entry_block_changes_the_guardrails() -> None:
    raw = load_strategy_config(None).model_dump()
    raw["regimes"]["SIDEWAYS"]["entry"]["ai_max_calls_per_hour"] = 3
    params = params_from_strategy(parse_strategy_config(raw))
    assert params.for_regime(Regime.SIDEWAYS).guard.max_calls_per_hour == 3
    assert params.for_regime(Regime.BULL).guard.max_calls_per_hour == 20
