"""The review graph walked in line (the backtest's reviewer) gives the LangGraph graph's outcome.

Each case scripts what the model answers at each node (a tool call, prose, an error, an unexpected
exception, a call that outlives the deadline) and compares the whole :class:`Outcome`, call log
included, of :class:`Reviewer` and :class:`InlineReviewer`: every branch of the graph and every
way out of the runner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from services.agent.core import ReviewPlan, plan_review
from services.agent.graph import ANALYST, GUARDIAN, InlineReviewer, Reviewer
from services.agent.guard_rules import ErrorKind
from services.agent.prompts import load_prompts
from services.agent.providers import LlmRequest, ProviderError, ProviderResponse
from services.agent.recording import Caller, CallSource
from services.agent.routing import Route
from tests.unit.agent.factories import PARAMS, book_of, gentle_uptrend, order

ROUTE = Route("scripted", "model-1", "primary")
Answer = Callable[[], Any]


def tool(**output: Any) -> Answer:
    return lambda: ProviderResponse(output=output, stop_reason="tool_use", model="model-1")


def prose(text: str) -> Answer:
    return lambda: ProviderResponse(output=None, text=text, stop_reason="end_turn", model="model-1")


def error(kind: ErrorKind) -> Answer:
    def raise_it() -> Any:
        raise ProviderError(kind, f"{kind} from the provider")

    return raise_it


def crash() -> Any:
    raise RuntimeError("the provider broke")


SLOW = "slow"  # the answer never comes before the deadline

CONFIRM = tool(decision="CONFIRM", confidence=80, reasoning="Hammer after a flush.")
SAFE = tool(decision="SAFE", reasoning="Calm.")


class ScriptedProvider:
    def __init__(self, script: dict[str, Answer | str]) -> None:
        self.script = script
        self.nodes: list[str] = []

    async def complete(self, request: LlmRequest) -> ProviderResponse:
        self.nodes.append(request.node)
        answer = self.script[request.node]
        if answer == SLOW:
            await asyncio.sleep(60)
        assert callable(answer)
        response: ProviderResponse = answer()
        return response

    async def close(self) -> None:
        return None


def plan() -> ReviewPlan:
    bars = gentle_uptrend(24)
    result = plan_review(book_of(bars), order(bars[-1].ts_close), PARAMS)
    assert isinstance(result, ReviewPlan)
    return result


async def review_with(kind: type[Reviewer], script: dict[str, Answer | str]) -> tuple[object, list[str]]:
    provider = ScriptedProvider(script)
    caller = Caller({"scripted": provider}, CallSource.LIVE, None, clock=lambda: 0.0)
    reviewer = kind(caller, load_prompts(), timeout_seconds=1.5)  # room for a loaded machine
    return await reviewer.review(plan(), ROUTE), provider.nodes


@pytest.mark.parametrize(
    "script",
    [
        pytest.param({ANALYST: CONFIRM, GUARDIAN: SAFE}, id="confirm-safe-approves"),
        pytest.param(
            {ANALYST: CONFIRM, GUARDIAN: tool(decision="WARNING", reasoning="Spiky.")}, id="guardian-warning"
        ),
        pytest.param(
            {ANALYST: tool(decision="REJECT", confidence=85, reasoning="Dead-cat bounce.")},
            id="analyst-reject-skips-the-guardian",
        ),
        pytest.param(
            {ANALYST: tool(decision="CONFIRM", confidence=40, reasoning="Maybe."), GUARDIAN: SAFE},
            id="low-confidence-confirm",
        ),
        pytest.param({ANALYST: prose("I think it is fine.")}, id="analyst-prose-is-invalid-output"),
        pytest.param({ANALYST: tool(decision="MAYBE")}, id="analyst-malformed-output"),
        pytest.param({ANALYST: error(ErrorKind.RATE_LIMITED)}, id="analyst-provider-error"),
        pytest.param({ANALYST: error(ErrorKind.RECORD_MISSING)}, id="analyst-record-missing"),
        pytest.param({ANALYST: SLOW}, id="analyst-outlives-the-deadline"),
        pytest.param({ANALYST: crash}, id="analyst-unexpected-exception"),
        pytest.param({ANALYST: CONFIRM, GUARDIAN: prose("Looks calm.")}, id="guardian-prose-raises"),
        pytest.param({ANALYST: CONFIRM, GUARDIAN: error(ErrorKind.OVERLOADED)}, id="guardian-provider-error"),
        pytest.param({ANALYST: CONFIRM, GUARDIAN: SLOW}, id="guardian-outlives-the-deadline"),
        pytest.param({ANALYST: CONFIRM, GUARDIAN: crash}, id="guardian-unexpected-exception"),
    ],
)
async def test_inline_walk_gives_the_graphs_outcome(script: dict[str, Answer | str]) -> None:
    graph_outcome, graph_nodes = await review_with(Reviewer, script)
    inline_outcome, inline_nodes = await review_with(InlineReviewer, script)
    assert inline_outcome == graph_outcome
    assert inline_nodes == graph_nodes
