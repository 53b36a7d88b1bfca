"""Analyst post-processing, Guardian and the runner's outcome (BEHAVIOUR §5.3-5.6; case L)."""

from __future__ import annotations

import pytest

from coinpilot.contracts import RejectReason
from services.agent.guard_rules import ErrorKind
from services.agent.verdicts import (
    GUARDIAN_SKIPPED,
    AnalystOutput,
    AnalystVerdict,
    GuardianResult,
    GuardianVerdict,
    InvalidOutput,
    analyst_failure,
    boundary_terms,
    compose,
    failure_outcome,
    parse_analyst,
    parse_guardian,
    post_process_analyst,
)


def analyst(decision: str, confidence: int, reasoning: str = "Hammer candle after the flush."):  # type: ignore[no-untyped-def]
    return post_process_analyst(AnalystOutput(decision=decision, confidence=confidence, reasoning=reasoning))


SAFE = GuardianResult(GuardianVerdict.SAFE, "Calm market.")
WARNING = GuardianResult(GuardianVerdict.WARNING, "Panic selling in the last hour.")


def test_confirm_with_confidence_59_becomes_a_reject_with_the_prefix() -> None:
    result = analyst("CONFIRM", 59)
    assert result.decision is AnalystVerdict.REJECT
    assert result.confidence == 59
    assert result.reason_code is RejectReason.AI_LOW_CONFIDENCE
    assert result.reasoning == "[insufficient confidence: 59] Hammer candle after the flush."


def test_confirm_with_confidence_60_stays_confirm() -> None:
    result = analyst("CONFIRM", 60)
    assert (result.decision, result.reasoning, result.reason_code) == (
        AnalystVerdict.CONFIRM,
        "Hammer candle after the flush.",
        None,
    )


def test_a_confident_reject_stays_reject() -> None:
    result = analyst("REJECT", 95)
    assert (result.decision, result.reason_code) == (AnalystVerdict.REJECT, RejectReason.AI_REJECTED)


def test_empty_reasoning_is_replaced_by_a_note() -> None:
    assert (
        analyst("CONFIRM", 80, "  ").reasoning
        == "model returned empty reasoning (decision=CONFIRM, confidence=80)"
    )


@pytest.mark.parametrize(
    ("reasoning", "terms"),
    [
        pytest.param(
            "RSI(7) bounced and price is above the moving average", ("rsi", "ma20"), id="rsi-and-ma"
        ),
        pytest.param("거래량 증가와 볼린저밴드 하단 반등", ("volume", "bollinger"), id="korean-aliases"),
        pytest.param("vol_ratio is high; bb_lower held", ("volume", "bollinger"), id="snake-case-aliases"),
        pytest.param("Long lower wick, bullish engulfing.", (), id="clean-reasoning"),
    ],
)
def test_boundary_terms_in_canonical_order(reasoning: str, terms: tuple[str, ...]) -> None:
    assert boundary_terms(reasoning) == terms


def test_boundary_audit_appends_a_note_and_never_forces_a_reject() -> None:
    raw = "RSI looks oversold. " + "x" * 300
    result = analyst("CONFIRM", 80, raw)
    assert result.decision is AnalystVerdict.CONFIRM
    assert result.boundary_violation and result.boundary_terms == ("rsi",)
    body, note = result.reasoning.split("\n\n")
    assert body == raw
    assert note.startswith("[BoundaryAudit]") and "terms=rsi" in note
    assert note.endswith("preview=" + raw[:220] + "...(후략)")


def test_boundary_audit_follows_the_low_confidence_prefix() -> None:
    result = analyst("CONFIRM", 10, "MA20 support")
    assert result.reasoning.startswith("[insufficient confidence: 10] MA20 support\n\n[BoundaryAudit]")


@pytest.mark.parametrize(
    ("output", "message_part"),
    [
        pytest.param(None, "no structured output", id="prose-answer"),
        pytest.param({"decision": "MAYBE", "confidence": 70, "reasoning": "r"}, "decision", id="bad-enum"),
        pytest.param(
            {"decision": "CONFIRM", "confidence": 101, "reasoning": "r"}, "confidence", id="out-of-range"
        ),
        pytest.param({"decision": "CONFIRM", "reasoning": "r"}, "confidence", id="missing-field"),
    ],
)
def test_invalid_analyst_output_raises_invalid_output(output: dict | None, message_part: str) -> None:
    with pytest.raises(InvalidOutput, match=message_part):
        parse_analyst(output)


def test_guardian_needs_a_reasoning() -> None:
    with pytest.raises(InvalidOutput):
        parse_guardian({"decision": "SAFE"})


def test_analyst_failure_rejects_with_confidence_zero_and_keeps_the_text() -> None:
    failed = analyst_failure(ErrorKind.RATE_LIMITED, "anthropic HTTP 429 rate_limit_error: slow down")
    assert (failed.decision, failed.confidence, failed.reason_code, failed.error_kind) == (
        AnalystVerdict.REJECT,
        0,
        RejectReason.AI_ERROR,
        ErrorKind.RATE_LIMITED,
    )
    assert (
        failed.reasoning == "analyst output validation failed: anthropic HTTP 429 rate_limit_error: slow down"
    )
    assert analyst_failure(ErrorKind.INVALID_OUTPUT, "x").reason_code is RejectReason.AI_INVALID_OUTPUT


def test_confirm_and_safe_approve_with_both_reasonings() -> None:
    outcome = compose(analyst("CONFIRM", 75), SAFE)
    assert outcome.approved and outcome.reason_code is None and outcome.confidence == 75
    assert outcome.reasoning == "[Analyst] Hammer candle after the flush. | [Guardian] Calm market."


def test_confirm_and_warning_reject_with_a_risk_warning() -> None:
    outcome = compose(analyst("CONFIRM", 75), WARNING)
    assert not outcome.approved
    assert outcome.reason_code is RejectReason.AI_RISK_WARNING
    assert outcome.reasoning == "[Risk Warning] Panic selling in the last hour."


def test_missing_guardian_is_a_failed_check() -> None:
    assert compose(analyst("CONFIRM", 75), None).reasoning == "[Risk Warning] Guardian check failed"


def test_analyst_reject_ends_with_the_analyst_reasoning() -> None:
    outcome = compose(analyst("REJECT", 80, "Dead-cat bounce."), GUARDIAN_SKIPPED)
    assert (outcome.approved, outcome.reasoning, outcome.reason_code) == (
        False,
        "Dead-cat bounce.",
        RejectReason.AI_REJECTED,
    )


@pytest.mark.parametrize(
    ("kind", "code", "reasoning"),
    [
        (ErrorKind.TIMEOUT, RejectReason.AI_TIMEOUT, "AI Analysis Timed Out (Conservative Fallback)"),
        (ErrorKind.SERVER_ERROR, RejectReason.AI_ERROR, "AI Error: boom"),
        (ErrorKind.INVALID_OUTPUT, RejectReason.AI_INVALID_OUTPUT, "AI Error: boom"),
        (ErrorKind.RECORD_MISSING, RejectReason.AI_RECORD_MISSING, "AI Record Missing: boom"),
    ],
)
def test_runner_failures_have_no_confidence(kind: ErrorKind, code: RejectReason, reasoning: str) -> None:
    outcome = failure_outcome(kind, "boom")
    assert (outcome.approved, outcome.confidence, outcome.reason_code, outcome.reasoning) == (
        False,
        None,
        code,
        reasoning,
    )
