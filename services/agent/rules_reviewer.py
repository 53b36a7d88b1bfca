"""An offline, deterministic reviewer: the same facts always give the same verdict.

Used for tests, demos and runs without API keys (``COINPILOT_LLM_PROVIDER=rules``). It judges the
same things the prompts ask the models to judge, with fixed thresholds, and answers in the same
structured shape a model would, so everything downstream (post-processing, guardrails, records)
runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LONG_BEARISH_STREAK = 3
STEEP_DECLINE_PCT = -3.0
ABNORMAL_RANGE_EXPANSION = 3.0
SHOOTING_STAR_UPPER_WICK = 0.6
PANIC_MOVE_PCT = 8.0


def _number(facts: Mapping[str, Any], key: str, default: float) -> float:
    value = facts.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def review_analyst(patterns: Mapping[str, Any]) -> dict[str, Any]:
    streak = int(_number(patterns, "bearish_streak_6h", 0))
    change = _number(patterns, "net_change_pct_6h", 0.0)
    expansion = _number(patterns, "range_expansion_ratio_6h", 1.0)
    upper_wick = _number(patterns, "last_upper_wick_ratio", 0.0)
    if streak >= LONG_BEARISH_STREAK:
        return _analyst("REJECT", 75, f"{streak} consecutive bearish hourly candles: the decline continues.")
    if change <= STEEP_DECLINE_PCT:
        return _analyst("REJECT", 70, f"Price fell {change:.2f}% over six hours: falling-knife risk.")
    if expansion >= ABNORMAL_RANGE_EXPANSION:
        return _analyst("REJECT", 65, f"Last candle range is {expansion:.2f}x the recent average: abnormal.")
    if upper_wick >= SHOOTING_STAR_UPPER_WICK:
        return _analyst("REJECT", 60, "Long upper wick on the last candle (shooting-star shape).")
    confidence = 70 if change > 0 else 62
    return _analyst("CONFIRM", confidence, "No abnormal candle pattern; the rebound structure looks intact.")


def review_guardian(payload: Mapping[str, Any]) -> dict[str, Any]:
    context = payload.get("market_context") or []
    closes = [float(c["close"]) for c in context if isinstance(c, Mapping) and "close" in c]
    if len(closes) >= 2 and closes[0] > 0:
        move = (closes[-1] - closes[0]) / closes[0] * 100
        if abs(move) >= PANIC_MOVE_PCT:
            return {
                "decision": "WARNING",
                "reasoning": f"{move:+.2f}% over the context window: panic/FOMO risk.",
            }
    return {"decision": "SAFE", "reasoning": "Recent volatility is within its normal range."}


def _analyst(decision: str, confidence: int, reasoning: str) -> dict[str, Any]:
    return {"decision": decision, "confidence": confidence, "reasoning": reasoning}


def review(node: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    return review_analyst(facts) if node == "analyst" else review_guardian(facts)
