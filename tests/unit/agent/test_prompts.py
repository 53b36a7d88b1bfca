"""Versioned prompt files and the messages rendered from them."""

from __future__ import annotations

import hashlib
import json

import pytest

from coinpilot.contracts import Regime
from services.agent.core import ReviewPlan, plan_review
from services.agent.prompts import (
    PROMPTS_DIR,
    analyst_user_message,
    format_price,
    guardian_user_message,
    load_prompts,
    parse_prompt,
)
from services.agent.providers import LlmRequest
from services.agent.verdicts import ANALYST_SCHEMA
from tests.unit.agent.factories import PARAMS, book_of, gentle_uptrend, order

PROMPTS = load_prompts()


def plan_for(regime: Regime = Regime.SIDEWAYS, diff_pct: float | None = 1.2) -> ReviewPlan:
    bars = gentle_uptrend(24)
    plan = plan_review(book_of(bars), order(bars[-1].ts_close, regime=regime, diff_pct=diff_pct), PARAMS)
    assert isinstance(plan, ReviewPlan)
    return plan


def test_prompt_hashes_are_the_sha256_of_the_files() -> None:
    raw = (PROMPTS_DIR / "analyst_v1.md").read_bytes()
    assert PROMPTS.analyst.sha256 == hashlib.sha256(raw).hexdigest()
    assert PROMPTS.version == "analyst_v1+guardian_v1"
    assert len(PROMPTS.sha256) == 64


def test_every_regime_has_a_description_and_guidance() -> None:
    for regime in Regime:
        text = PROMPTS.analyst.regimes[str(regime)]
        assert text.description and text.guidance


def test_analyst_message_shows_the_real_regime_gap() -> None:
    """The original always showed 0.00 % (§5.4 [BUG]); the rebuild passes the regime's diff_pct."""
    message = analyst_user_message(plan_for(Regime.BEAR, -3.456), PROMPTS.analyst)
    assert "MA50/MA200 gap: -3.46%" in message
    assert "Market regime: BEAR (downtrend" in message


def test_analyst_message_has_no_volume_and_the_eight_features() -> None:
    plan = plan_for()
    message = analyst_user_message(plan, PROMPTS.analyst)
    ohlc = json.loads(message.split("(volume removed on purpose): ")[1])
    assert len(ohlc) == 24 and all(set(c) == {"timestamp", "open", "high", "low", "close"} for c in ohlc)
    assert all(f"- {name}: " in message for name in plan.patterns.as_dict())
    assert "Current price: 100,000 KRW" in message
    assert "Hourly context candles: 24" in message


def test_guardian_message_carries_the_whole_payload_with_volume() -> None:
    plan = plan_for()
    message = guardian_user_message(plan, PROMPTS.guardian)
    payload = json.loads(message.split("\n", 2)[2])
    assert payload["market_context"][0]["volume"] == 10.0
    assert payload["entry_config"]["ai_reject_cooldown_window_min"] == 30


@pytest.mark.parametrize(
    ("symbol", "price", "text"),
    [("KRW-BTC", 95050000.0, "95,050,000 KRW"), ("USDT-BTC", 27123.456, "27,123.46 USDT")],
)
def test_price_format(symbol: str, price: float, text: str) -> None:
    assert format_price(symbol, price) == text


def test_a_prompt_without_a_user_section_is_refused() -> None:
    with pytest.raises(ValueError, match="## user"):
        parse_prompt("broken_v1", "## system\nhello\n")


def test_the_record_key_changes_with_the_prompt_and_nothing_else_unseen() -> None:
    def request(system: str, facts: dict[str, int]) -> LlmRequest:
        return LlmRequest(
            "analyst", "anthropic", "m", "analyst_v1", "o", system, "u", "t", "d", ANALYST_SCHEMA, facts=facts
        )

    assert request("s", {"a": 1}).key() == request("s", {"a": 2}).key()
    assert request("s", {}).key() != request("s2", {}).key()
