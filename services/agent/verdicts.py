"""What the reviewers may answer, how their answers are post-processed, and the final outcome.

BEHAVIOUR §5.3 (Analyst post-processing, boundary audit), §5.4 (Guardian) and §5.6 (the runner's
reasoning strings). Pure: parsed model output in, :class:`Outcome` out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coinpilot.contracts import RejectReason
from services.agent.guard_rules import ErrorKind

MIN_CONFIDENCE = 60
PREVIEW_CHARS = 220


class AnalystVerdict(StrEnum):
    CONFIRM = "CONFIRM"
    REJECT = "REJECT"


class GuardianVerdict(StrEnum):
    SAFE = "SAFE"
    WARNING = "WARNING"


class AnalystOutput(BaseModel):
    """The Analyst's structured answer (``AnalystDecision``), validated at the model boundary."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    decision: AnalystVerdict
    confidence: int = Field(ge=0, le=100)
    reasoning: str = ""


class GuardianOutput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    decision: GuardianVerdict
    reasoning: str


ANALYST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["CONFIRM", "REJECT"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "reasoning": {"type": "string"},
    },
    "required": ["decision", "confidence", "reasoning"],
    "additionalProperties": False,
}

GUARDIAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["SAFE", "WARNING"]},
        "reasoning": {"type": "string"},
    },
    "required": ["decision", "reasoning"],
    "additionalProperties": False,
}


_M = TypeVar("_M", bound=BaseModel)


class InvalidOutput(ValueError):
    """The model answered, but not with something the schema accepts."""


def parse_analyst(output: Mapping[str, Any] | None, detail: str = "") -> AnalystOutput:
    return _parse(AnalystOutput, output, detail)


def parse_guardian(output: Mapping[str, Any] | None, detail: str = "") -> GuardianOutput:
    return _parse(GuardianOutput, output, detail)


def _parse(model: type[_M], output: Mapping[str, Any] | None, detail: str) -> _M:
    if output is None:
        raise InvalidOutput(detail or "model returned no structured output")
    try:
        return model.model_validate(dict(output))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise InvalidOutput(f"{model.__name__} validation failed: {problems}") from exc


# -- boundary audit (§5.3 step 4) ------------------------------------------------------------

BOUNDARY_ALIASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rsi", ("rsi", "rsi(14)", "rsi(7)")),
    ("ma20", ("ma20", "ma(20)", "moving average", "이동평균")),
    ("volume", ("거래량", "volume ratio", "vol_ratio", "볼륨")),
    ("bollinger", ("볼린저", "bb 하단", "bb_lower", "볼린저밴드")),
)
TRUNCATED_SUFFIX = "...(후략)"
NO_PREVIEW = "(no reasoning text to preview)"


def boundary_terms(reasoning: str) -> tuple[str, ...]:
    """Canonical names of rule-engine indicators the reasoning cites, in canonical order."""
    lowered = reasoning.lower()
    return tuple(name for name, aliases in BOUNDARY_ALIASES if any(a in lowered for a in aliases))


def boundary_note(raw_reasoning: str, terms: tuple[str, ...]) -> str:
    text = raw_reasoning.rstrip()
    if not text:
        preview = NO_PREVIEW
    elif len(text) > PREVIEW_CHARS:
        preview = text[:PREVIEW_CHARS].rstrip() + TRUNCATED_SUFFIX
    else:
        preview = text
    return (
        "[BoundaryAudit] reasoning cites indicators the rule engine already validated "
        f"(audit only, decision unchanged); terms={','.join(terms)}; preview={preview}"
    )


# -- the Analyst's result ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalystResult:
    decision: AnalystVerdict
    confidence: int
    reasoning: str
    reason_code: RejectReason | None = None
    error_kind: ErrorKind | None = None
    boundary_violation: bool = False
    boundary_terms: tuple[str, ...] = ()

    @property
    def confirms(self) -> bool:
        return self.decision is AnalystVerdict.CONFIRM


def post_process_analyst(output: AnalystOutput) -> AnalystResult:
    """§5.3 steps 2-4: fill empty reasoning, demote a weak CONFIRM, audit cited indicators."""
    raw = output.reasoning
    decision, confidence = output.decision, output.confidence
    reasoning = (
        raw
        if raw.strip()
        else (f"model returned empty reasoning (decision={decision}, confidence={confidence})")
    )
    reason_code: RejectReason | None = RejectReason.AI_REJECTED if decision is AnalystVerdict.REJECT else None
    if decision is AnalystVerdict.CONFIRM and confidence < MIN_CONFIDENCE:
        decision = AnalystVerdict.REJECT
        reason_code = RejectReason.AI_LOW_CONFIDENCE
        reasoning = f"[insufficient confidence: {confidence}] {reasoning}"
    terms = boundary_terms(raw)
    if terms:
        reasoning = f"{reasoning}\n\n{boundary_note(raw, terms)}"
    return AnalystResult(decision, confidence, reasoning, reason_code, None, bool(terms), terms)


def analyst_failure(kind: ErrorKind, text: str) -> AnalystResult:
    """§5.3 step 1: an Analyst that could not answer rejects with confidence 0 and says why."""
    code = RejectReason.AI_INVALID_OUTPUT if kind is ErrorKind.INVALID_OUTPUT else RejectReason.AI_ERROR
    return AnalystResult(AnalystVerdict.REJECT, 0, f"analyst output validation failed: {text}", code, kind)


@dataclass(frozen=True, slots=True)
class GuardianResult:
    decision: GuardianVerdict
    reasoning: str

    @property
    def safe(self) -> bool:
        return self.decision is GuardianVerdict.SAFE


GUARDIAN_SKIPPED = GuardianResult(GuardianVerdict.WARNING, "Skipped: Analyst already rejected.")


# -- the runner's outcome (§5.6) ---------------------------------------------------------------

TIMEOUT_REASONING = "AI Analysis Timed Out (Conservative Fallback)"


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One model call as the decision needs it: who answered, tokens, latency, how it ended."""

    node: str
    provider: str
    model: str
    status: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: int = 0
    error_kind: ErrorKind | None = None
    record_key: str = ""
    over_network: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    approved: bool
    reasoning: str
    reason_code: RejectReason | None
    confidence: int | None
    error_kind: ErrorKind | None = None
    boundary_violation: bool = False
    boundary_terms: tuple[str, ...] = ()
    calls: tuple[CallSummary, ...] = field(default=())
    runner_failed: bool = False


def compose(analyst: AnalystResult, guardian: GuardianResult | None) -> Outcome:
    """Approve only for CONFIRM + SAFE; say which reviewer said no."""
    if not analyst.confirms:
        approved, reasoning = False, analyst.reasoning or "Market Analysis failed."
        code: RejectReason | None = analyst.reason_code or RejectReason.AI_REJECTED
    elif guardian is None or not guardian.safe:
        text = guardian.reasoning if guardian is not None else "Guardian check failed"
        approved, reasoning, code = False, f"[Risk Warning] {text}", RejectReason.AI_RISK_WARNING
    else:
        approved, reasoning = True, f"[Analyst] {analyst.reasoning} | [Guardian] {guardian.reasoning}"
        code = None
    return Outcome(
        approved=approved,
        reasoning=reasoning,
        reason_code=code,
        confidence=analyst.confidence,
        error_kind=analyst.error_kind,
        boundary_violation=analyst.boundary_violation,
        boundary_terms=analyst.boundary_terms,
    )


def failure_outcome(kind: ErrorKind, text: str) -> Outcome:
    """The runner's error path: no confidence, a reason code named by the error kind."""
    if kind is ErrorKind.TIMEOUT:
        reasoning, code = TIMEOUT_REASONING, RejectReason.AI_TIMEOUT
    elif kind is ErrorKind.RECORD_MISSING:
        reasoning, code = f"AI Record Missing: {text}", RejectReason.AI_RECORD_MISSING
    elif kind is ErrorKind.INVALID_OUTPUT:
        reasoning, code = f"AI Error: {text}", RejectReason.AI_INVALID_OUTPUT
    else:
        reasoning, code = f"AI Error: {text}", RejectReason.AI_ERROR
    return Outcome(False, reasoning, code, None, kind, runner_failed=True)
