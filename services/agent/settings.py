"""Agent settings (env prefix ``COINPILOT_``; the §0.5 names without the prefix are accepted too).

Connections, keys and knobs live here; the frozen :class:`~services.agent.core.AgentParams` the core
decides with come from the strategy YAML (``regimes.<REGIME>.entry.ai_*``) via
:mod:`coinpilot.strategy_config` (:func:`load_params`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.contracts import Regime
from coinpilot.strategy_config import EntryConfig, StrategyConfig, load_strategy_config
from services.agent.core import AgentParams, RegimeAiParams
from services.agent.guard_rules import GuardParams
from services.agent.prefilter import PrefilterParams
from services.agent.recording import CallSource
from services.agent.routing import ANTHROPIC, OPENAI, RoutingConfig


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"COINPILOT_{name}", name)


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COINPILOT_", extra="ignore", frozen=True, populate_by_name=True
    )

    llm_mode: str = Field(
        default="dev", validation_alias=_env("LLM_MODE"), description="dev -> Haiku, prod -> Sonnet"
    )
    llm_provider: str = Field(default=ANTHROPIC, validation_alias=_env("LLM_PROVIDER"))
    llm_model: str = Field(default="", validation_alias=_env("LLM_MODEL"))
    ai_decision_primary_provider: str = Field(
        default="", validation_alias=_env("AI_DECISION_PRIMARY_PROVIDER")
    )
    ai_decision_primary_model: str = Field(default="", validation_alias=_env("AI_DECISION_PRIMARY_MODEL"))
    ai_canary_enabled: str = Field(default="false", validation_alias=_env("AI_CANARY_ENABLED"))
    ai_canary_percent: str = Field(default="10", validation_alias=_env("AI_CANARY_PERCENT"))
    ai_canary_provider: str = Field(default=OPENAI, validation_alias=_env("AI_CANARY_PROVIDER"))
    ai_canary_model: str = Field(default="gpt-4o-mini", validation_alias=_env("AI_CANARY_MODEL"))
    llm_usage_enabled: bool = Field(default=True, validation_alias=_env("LLM_USAGE_ENABLED"))

    llm_mode_source: CallSource = Field(
        default=CallSource.LIVE,
        description="live: call and record; replay: answer from llm_call_records only; rules: offline",
    )
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias=_env("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = None
    openai_api_key: SecretStr | None = Field(default=None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = None

    llm_request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Per HTTP request (SDK timeout)"
    )
    llm_max_retries: int = Field(default=2, ge=0, description="SDK retries; the review deadline bounds them")
    llm_max_tokens: int = Field(default=1024, ge=64)
    ai_timeout_seconds: float = Field(default=40.0, gt=0, description="Whole Analyst -> Guardian deadline")
    ai_max_concurrency: int = Field(default=4, ge=1, description="Reviews in flight in this process")
    ai_keepalive_seconds: float = Field(
        default=10.0, gt=0, description="in_progress() period while reviewing"
    )
    ai_context_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long an order waits for the hourly candle that closed just before it",
    )
    prompt_version: str = "v1"

    @field_validator("anthropic_api_key", "openai_api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    def keys(self) -> frozenset[str]:
        present = set()
        if self.anthropic_api_key is not None:
            present.add(ANTHROPIC)
        if self.openai_api_key is not None:
            present.add(OPENAI)
        return frozenset(present)

    def effective_source(self) -> CallSource:
        """A live run with no API key at all reviews with the offline rules instead of failing every call."""
        if self.llm_mode_source is CallSource.LIVE and not self.keys():
            return CallSource.RULES
        return self.llm_mode_source

    def routing(self) -> RoutingConfig:
        provider = "rules" if self.effective_source() is CallSource.RULES else self.llm_provider
        return RoutingConfig(
            mode=self.llm_mode,
            provider=provider,
            model="" if provider == "rules" else self.llm_model,
            primary_provider="" if provider == "rules" else self.ai_decision_primary_provider,
            primary_model="" if provider == "rules" else self.ai_decision_primary_model,
            canary_enabled=self.ai_canary_enabled,
            canary_percent=self.ai_canary_percent,
            canary_provider=self.ai_canary_provider,
            canary_model=self.ai_canary_model,
            keys=self.keys(),
        )


def regime_params(entry: EntryConfig) -> RegimeAiParams:
    """The agent's view of one regime entry block (units as documented in the strategy config)."""
    defaults = PrefilterParams()
    return RegimeAiParams(
        prefilter=PrefilterParams(
            enabled=entry.ai_prefilter_enabled,
            min_context_candles=entry.ai_prefilter_min_context_candles,
            max_downtrend_ratio=_or(entry.ai_prefilter_max_downtrend_ratio, defaults.max_downtrend_ratio),
            min_rebound_pct=_or(entry.ai_prefilter_min_rebound_pct, defaults.min_rebound_pct),
            min_volume_recovery_ratio=_or(
                entry.ai_prefilter_min_volume_recovery_ratio, defaults.min_volume_recovery_ratio
            ),
        ),
        guard=GuardParams(
            cooldown_minutes_1=entry.ai_reject_cooldown_min_1,
            cooldown_minutes_2=entry.ai_reject_cooldown_min_2,
            cooldown_minutes_3=entry.ai_reject_cooldown_min_3,
            cooldown_window_minutes=entry.ai_reject_cooldown_window_min,
            max_calls_per_hour=entry.ai_max_calls_per_hour,
            max_calls_per_day=entry.ai_max_calls_per_day,
            credit_block_minutes=entry.ai_credit_block_minutes,
            error_streak_threshold=entry.ai_error_streak_threshold,
            error_block_minutes=entry.ai_error_block_minutes,
        ),
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def params_from_strategy(config: StrategyConfig) -> AgentParams:
    regimes = {}
    for regime in Regime:
        block = config.regimes.for_regime(regime)
        if block is not None:
            regimes[regime] = regime_params(block.entry)
    return AgentParams(regimes=regimes)


def load_params(path: Path | None) -> AgentParams:
    """The agent's parameters from the strategy YAML (``None``: the shipped file); fails fast."""
    return params_from_strategy(load_strategy_config(path))
