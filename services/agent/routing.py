"""Which provider and model review an order (BEHAVIOUR §5.6): primary route, canary, fallbacks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ANTHROPIC = "anthropic"
OPENAI = "openai"
RULES = "rules"

DEV_MODEL = "claude-haiku-4-5-20251001"
PROD_MODEL = "claude-sonnet-4-5-20250929"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
RULES_MODEL = "rules-v1"
STRATEGY_NAME = "AdaptiveMeanReversion"
NO_MARKER = "no-signal-timestamp"
MAX_CANARY_PERCENT = 20
TRUTHY = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str
    label: str

    @property
    def model_used(self) -> str:
        """``"<provider>:<model> (<route_label>)"``, stored in agent_decisions.model_used (<= 128)."""
        return f"{self.provider}:{self.model} ({self.label})"


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The §0.5 variables, already read from the environment by the settings."""

    mode: str = "dev"
    provider: str = ANTHROPIC
    model: str = ""
    primary_provider: str = ""
    primary_model: str = ""
    canary_enabled: str = "false"
    canary_percent: str = "10"
    canary_provider: str = OPENAI
    canary_model: str = OPENAI_DEFAULT_MODEL
    keys: frozenset[str] = frozenset()


def model_for_mode(mode: str) -> str:
    return PROD_MODEL if mode.strip().lower() == "prod" else DEV_MODEL


def normalise_provider(name: str) -> str:
    lowered = name.strip().lower()
    if lowered in (OPENAI, "gpt"):
        return OPENAI
    if lowered == RULES:
        return RULES
    return ANTHROPIC


def default_model(provider: str, mode: str) -> str:
    """The mode's Claude model for Anthropic; an OpenAI route gets an OpenAI model, never a Claude one."""
    if provider == OPENAI:
        return OPENAI_DEFAULT_MODEL
    if provider == RULES:
        return RULES_MODEL
    return model_for_mode(mode)


def canary_percent(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 10
    return max(0, min(MAX_CANARY_PERCENT, value))


def canary_bucket(symbol: str, marker: str, strategy_name: str = STRATEGY_NAME) -> int:
    seed = f"{symbol}|{strategy_name}|{marker or NO_MARKER}"
    return int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % 100


def primary_route(cfg: RoutingConfig, label: str = "primary") -> Route:
    provider = normalise_provider(cfg.primary_provider or cfg.provider or ANTHROPIC)
    other = OPENAI if provider == ANTHROPIC else ANTHROPIC
    if provider != RULES and provider not in cfg.keys and other in cfg.keys:
        provider = other
    model = cfg.primary_model or cfg.model or default_model(provider, cfg.mode)
    return Route(provider, model, label)


def choose_route(symbol: str, marker: str, cfg: RoutingConfig, strategy_name: str = STRATEGY_NAME) -> Route:
    """Primary unless the canary is on and this order's bucket falls under the percentage.

    The bucket is a hash of symbol, strategy and the last context candle's timestamp, so the same
    order always takes the same route (replays included).
    """
    primary = primary_route(cfg)
    if primary.provider == RULES or cfg.canary_enabled.strip().lower() not in TRUTHY:
        return primary
    if canary_bucket(symbol, marker, strategy_name) >= canary_percent(cfg.canary_percent):
        return primary
    provider = normalise_provider(cfg.canary_provider)
    if provider not in cfg.keys:
        return primary_route(cfg, label="primary-fallback")
    return Route(provider, cfg.canary_model or default_model(provider, cfg.mode), "canary")
