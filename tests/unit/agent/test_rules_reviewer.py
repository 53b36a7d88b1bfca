"""The offline deterministic reviewer."""

from __future__ import annotations

import pytest

from services.agent.rules_reviewer import review

NEUTRAL = {
    "bearish_streak_6h": 1,
    "net_change_pct_6h": 0.8,
    "range_expansion_ratio_6h": 1.0,
    "last_upper_wick_ratio": 0.2,
}


@pytest.mark.parametrize(
    ("patch", "decision", "confidence"),
    [
        pytest.param({}, "CONFIRM", 70, id="neutral-rising-confirms"),
        pytest.param({"net_change_pct_6h": -0.5}, "CONFIRM", 62, id="neutral-falling-confirms-weakly"),
        pytest.param({"bearish_streak_6h": 3}, "REJECT", 75, id="three-bearish-rejects"),
        pytest.param({"net_change_pct_6h": -3.0}, "REJECT", 70, id="steep-decline-rejects"),
        pytest.param({"range_expansion_ratio_6h": 3.2}, "REJECT", 65, id="range-expansion-rejects"),
        pytest.param({"last_upper_wick_ratio": 0.7}, "REJECT", 60, id="shooting-star-rejects"),
    ],
)
def test_analyst_rules(patch: dict[str, float], decision: str, confidence: int) -> None:
    out = review("analyst", {**NEUTRAL, **patch})
    assert (out["decision"], out["confidence"]) == (decision, confidence)
    assert out["reasoning"]


@pytest.mark.parametrize(
    ("closes", "decision"),
    [([100, 101, 103], "SAFE"), ([100, 95, 91], "WARNING"), ([100, 104, 109], "WARNING"), ([100], "SAFE")],
)
def test_guardian_rules(closes: list[float], decision: str) -> None:
    payload = {"market_context": [{"close": c} for c in closes]}
    assert review("guardian", payload)["decision"] == decision


def test_same_facts_same_answer() -> None:
    assert review("analyst", NEUTRAL) == review("analyst", dict(NEUTRAL))
