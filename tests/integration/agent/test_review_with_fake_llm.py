"""The review graph driven through the real anthropic/openai SDKs against local fake servers.

Every case ends in the decision §5 requires: approve only for CONFIRM + SAFE, and REJECT with a
reason code for everything else (low confidence, warning, malformed output, prose, timeout,
429 / 529 / 5xx).
"""

from __future__ import annotations

import time

import pytest

from coinpilot.contracts import RejectReason
from services.agent.core import ReviewPlan, plan_review
from services.agent.graph import Reviewer
from services.agent.guard_rules import ErrorKind
from services.agent.prompts import load_prompts
from services.agent.recording import Caller, CallSource
from services.agent.routing import DEV_MODEL, Route
from services.agent.sdk_providers import AnthropicProvider, OpenAIProvider
from tests.support.fake_llm import ANTHROPIC, OPENAI, TEST_KEY, FakeLlmServer, Reply
from tests.unit.agent.factories import PARAMS, book_of, gentle_uptrend, order

CLAUDE = Route("anthropic", DEV_MODEL, "primary")
GPT = Route("openai", "gpt-4o-mini", "canary")
PROMPTS = load_prompts()


def plan() -> ReviewPlan:
    bars = gentle_uptrend(24)
    result = plan_review(book_of(bars), order(bars[-1].ts_close), PARAMS)
    assert isinstance(result, ReviewPlan)
    return result


def reviewer(server: FakeLlmServer, *, timeout: float = 5.0, request_timeout: float = 5.0) -> Reviewer:
    providers = {
        "anthropic": AnthropicProvider(
            api_key=TEST_KEY, base_url=server.anthropic_url, timeout_seconds=request_timeout, max_retries=0
        ),
        "openai": OpenAIProvider(
            api_key=TEST_KEY, base_url=server.openai_url, timeout_seconds=request_timeout, max_retries=0
        ),
    }
    return Reviewer(Caller(providers, CallSource.LIVE, None), PROMPTS, timeout_seconds=timeout)


async def test_confirm_and_safe_approve_after_two_anthropic_calls(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(
        ANTHROPIC, Reply.analyst("CONFIRM", 75, "Hammer after a flush."), Reply.guardian("SAFE", "Calm.")
    )
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert outcome.approved and outcome.reason_code is None and outcome.confidence == 75
    assert outcome.reasoning == "[Analyst] Hammer after a flush. | [Guardian] Calm."
    assert fake_llm.count(ANTHROPIC) == 2
    analyst_request, guardian_request = fake_llm.requests
    assert analyst_request.body["tool_choice"] == {"type": "tool", "name": "analyst_decision"}
    assert analyst_request.body["tools"][0]["input_schema"]["required"] == [
        "decision",
        "confidence",
        "reasoning",
    ]
    assert analyst_request.body["temperature"] == 0
    assert analyst_request.body["model"] == DEV_MODEL
    assert analyst_request.body["system"].startswith("You are a technical market analyst")
    assert guardian_request.tool_name == "guardian_decision"
    assert [c.node for c in outcome.calls] == ["analyst", "guardian"]
    assert all(c.input_tokens == 420 and c.output_tokens == 64 and c.over_network for c in outcome.calls)


async def test_analyst_reject_ends_the_graph_without_the_guardian(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.analyst("REJECT", 85, "Dead-cat bounce."))
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (outcome.approved, outcome.reason_code, outcome.reasoning, outcome.confidence) == (
        False,
        RejectReason.AI_REJECTED,
        "Dead-cat bounce.",
        85,
    )
    assert fake_llm.count() == 1


async def test_guardian_warning_rejects_with_a_risk_warning(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 80), Reply.guardian("WARNING", "FOMO spike."))
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (outcome.approved, outcome.reason_code, outcome.reasoning) == (
        False,
        RejectReason.AI_RISK_WARNING,
        "[Risk Warning] FOMO spike.",
    )


async def test_confidence_59_rejects_and_60_reaches_the_guardian(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 59, "Weak hammer."))
    low = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (low.approved, low.reason_code, low.confidence) == (False, RejectReason.AI_LOW_CONFIDENCE, 59)
    assert low.reasoning == "[insufficient confidence: 59] Weak hammer."
    assert fake_llm.count() == 1

    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 60, "Hammer."), Reply.guardian("SAFE"))
    enough = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert enough.approved and enough.confidence == 60
    assert fake_llm.count() == 3


async def test_tool_input_that_fails_the_schema_is_invalid_output(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(
        ANTHROPIC, Reply.tool({"decision": "CONFIRM", "confidence": "very high", "reasoning": "r"})
    )
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (outcome.approved, outcome.reason_code, outcome.confidence, outcome.error_kind) == (
        False,
        RejectReason.AI_INVALID_OUTPUT,
        0,
        ErrorKind.INVALID_OUTPUT,
    )
    assert outcome.reasoning.startswith("analyst output validation failed: AnalystOutput validation failed")


async def test_a_model_answering_in_prose_is_invalid_output(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.prose("I would buy, the chart looks fine."))
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert outcome.reason_code is RejectReason.AI_INVALID_OUTPUT
    assert "without calling analyst_decision (stop_reason=end_turn)" in outcome.reasoning


async def test_openai_arguments_that_are_not_json_are_invalid_output(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(OPENAI, Reply.bad_arguments('{"decision": CONFIRM'))
    outcome = await reviewer(fake_llm).review(plan(), GPT)
    assert outcome.reason_code is RejectReason.AI_INVALID_OUTPUT
    assert "tool arguments are not JSON" in outcome.reasoning
    assert fake_llm.count(OPENAI) == 1


async def test_openai_route_approves_with_a_forced_function_tool(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(OPENAI, Reply.analyst("CONFIRM", 70), Reply.guardian("SAFE"))
    outcome = await reviewer(fake_llm).review(plan(), GPT)
    assert outcome.approved
    first = fake_llm.requests[0]
    assert first.path == "/v1/chat/completions"
    assert first.body["tool_choice"] == {"type": "function", "function": {"name": "analyst_decision"}}
    assert first.body["messages"][0]["role"] == "system" and first.body["temperature"] == 0
    assert first.headers["authorization"] == f"Bearer {TEST_KEY}"


async def test_the_review_deadline_rejects_as_a_timeout(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 90).held())
    started = time.perf_counter()
    outcome = await reviewer(fake_llm, timeout=0.5).review(plan(), CLAUDE)
    elapsed = time.perf_counter() - started
    assert (outcome.approved, outcome.reason_code, outcome.confidence) == (
        False,
        RejectReason.AI_TIMEOUT,
        None,
    )
    assert outcome.reasoning == "AI Analysis Timed Out (Conservative Fallback)"
    assert outcome.calls[0].status == "timeout"
    assert elapsed < 2.0


async def test_an_sdk_request_timeout_is_a_timeout_too(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 90).held())
    outcome = await reviewer(fake_llm, timeout=5.0, request_timeout=0.3).review(plan(), CLAUDE)
    assert (outcome.reason_code, outcome.error_kind, outcome.confidence) == (
        RejectReason.AI_TIMEOUT,
        ErrorKind.TIMEOUT,
        None,
    )


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        pytest.param(Reply.rate_limited, ErrorKind.RATE_LIMITED, 429, id="429-rate-limit"),
        pytest.param(Reply.overloaded, ErrorKind.OVERLOADED, 529, id="529-overloaded"),
        pytest.param(Reply.server_error, ErrorKind.SERVER_ERROR, 500, id="500-api-error"),
    ],
)
async def test_provider_errors_in_the_analyst_reject_with_confidence_zero(
    fake_llm: FakeLlmServer, reply: type[Reply], kind: ErrorKind, status: int
) -> None:
    fake_llm.script(ANTHROPIC, reply())  # type: ignore[operator]
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (outcome.approved, outcome.reason_code, outcome.confidence, outcome.error_kind) == (
        False,
        RejectReason.AI_ERROR,
        0,
        kind,
    )
    assert outcome.reasoning.startswith(f"analyst output validation failed: anthropic HTTP {status}")
    assert fake_llm.count() == 1  # max_retries=0: exactly one request


async def test_a_guardian_error_takes_the_runner_error_path(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 80), Reply.server_error())
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (outcome.reason_code, outcome.confidence, outcome.error_kind) == (
        RejectReason.AI_ERROR,
        None,
        ErrorKind.SERVER_ERROR,
    )
    assert outcome.reasoning == "AI Error: anthropic HTTP 500 api_error: Internal server error"


async def test_low_credit_is_recognised_from_the_anthropic_error(fake_llm: FakeLlmServer) -> None:
    fake_llm.script(
        ANTHROPIC,
        Reply.error(
            400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API."
        ),
    )
    outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    assert (outcome.reason_code, outcome.error_kind) == (RejectReason.AI_ERROR, ErrorKind.LOW_CREDIT)


async def test_a_wrong_key_is_an_auth_error(fake_llm: FakeLlmServer) -> None:
    fake_llm.api_key = "another-key"
    try:
        outcome = await reviewer(fake_llm).review(plan(), CLAUDE)
    finally:
        fake_llm.api_key = TEST_KEY
    assert (outcome.reason_code, outcome.error_kind) == (RejectReason.AI_ERROR, ErrorKind.AUTH)
