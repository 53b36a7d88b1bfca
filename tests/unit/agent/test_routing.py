"""Provider/model routing and canary (BEHAVIOUR §5.6; acceptance case L)."""

from __future__ import annotations

import pytest

from services.agent.routing import (
    DEV_MODEL,
    PROD_MODEL,
    Route,
    RoutingConfig,
    canary_bucket,
    canary_percent,
    choose_route,
    model_for_mode,
)

BOTH_KEYS = frozenset({"anthropic", "openai"})


def seed_with_bucket(bucket: int) -> str:
    return next(
        f"2026-02-18T{h:02d}:{m:02d}:00+00:00"
        for h in range(24)
        for m in range(60)
        if canary_bucket("KRW-BTC", f"2026-02-18T{h:02d}:{m:02d}:00+00:00") == bucket
    )


@pytest.mark.parametrize(("raw", "percent"), [("99", 20), ("10", 10), ("-5", 0), ("abc", 10), (" 7 ", 7)])
def test_canary_percent_is_clamped_to_0_20(raw: str, percent: int) -> None:
    assert canary_percent(raw) == percent


def test_bucket_3_with_percent_10_routes_to_the_canary() -> None:
    cfg = RoutingConfig(canary_enabled="true", canary_percent="10", keys=BOTH_KEYS)
    route = choose_route("KRW-BTC", seed_with_bucket(3), cfg)
    assert route == Route("openai", "gpt-4o-mini", "canary")
    assert route.model_used == "openai:gpt-4o-mini (canary)"


def test_bucket_above_the_percentage_stays_primary() -> None:
    cfg = RoutingConfig(canary_enabled="yes", canary_percent="10", keys=BOTH_KEYS)
    assert choose_route("KRW-BTC", seed_with_bucket(10), cfg) == Route("anthropic", DEV_MODEL, "primary")


def test_canary_without_its_key_falls_back_to_primary() -> None:
    cfg = RoutingConfig(canary_enabled="on", canary_percent="20", keys=frozenset({"anthropic"}))
    route = choose_route("KRW-BTC", seed_with_bucket(3), cfg)
    assert route.model_used == "anthropic:claude-haiku-4-5-20251001 (primary-fallback)"
    assert len(route.model_used) == 54 <= 128


def test_disabled_canary_never_routes() -> None:
    cfg = RoutingConfig(canary_enabled="false", canary_percent="20", keys=BOTH_KEYS)
    assert choose_route("KRW-BTC", seed_with_bucket(0), cfg).label == "primary"


@pytest.mark.parametrize(
    ("mode", "model"), [("prod", PROD_MODEL), ("PROD", PROD_MODEL), ("dev", DEV_MODEL), ("", DEV_MODEL)]
)
def test_model_by_mode(mode: str, model: str) -> None:
    assert model_for_mode(mode) == model


def test_primary_switches_provider_when_its_key_is_missing() -> None:
    cfg = RoutingConfig(provider="anthropic", keys=frozenset({"openai"}))
    assert choose_route("KRW-BTC", "m", cfg) == Route("openai", "gpt-4o-mini", "primary")


def test_explicit_primary_overrides_llm_provider_and_model() -> None:
    cfg = RoutingConfig(
        provider="anthropic", model="x", primary_provider="openai", primary_model="gpt-4.1", keys=BOTH_KEYS
    )
    assert choose_route("KRW-BTC", "m", cfg) == Route("openai", "gpt-4.1", "primary")


def test_rules_provider_ignores_the_canary() -> None:
    cfg = RoutingConfig(provider="rules", canary_enabled="true", canary_percent="20", keys=BOTH_KEYS)
    assert choose_route("KRW-BTC", seed_with_bucket(0), cfg) == Route("rules", "rules-v1", "primary")
