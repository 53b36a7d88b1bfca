"""The review graph (BEHAVIOUR §5.3-5.6): Analyst -> (CONFIRM) Guardian, under one deadline.

A LangGraph ``StateGraph`` of two nodes. The Analyst turns its own failures into a REJECT
(§5.3 step 1); the Guardian re-raises (§5.4), and the runner turns whatever escaped - the
deadline, a provider error, output that does not validate - into a REJECT with a reason code.
Only a :class:`~coinpilot.errors.TransientError` (the record store is down) escapes the runner:
that is a retry, not a verdict.

A backtest walks the same two nodes along the same edges in line (:class:`InlineReviewer`): with
no network and no concurrency LangGraph adds nothing to the verdicts, but importing it costs
~0.75 s of CPU and every pass through its runtime ~1 ms (a thread hop for the conditional edge,
checkpoints), so the module imports it only when a :class:`Reviewer` compiles its graph.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from langgraph.constants import END, START  # the constants alone: cheap (langgraph.graph is not)

from coinpilot.errors import TransientError
from services.agent.core import ReviewPlan
from services.agent.guard_rules import ErrorKind
from services.agent.prompts import PromptFile, PromptSet, analyst_user_message, guardian_user_message
from services.agent.providers import LlmRequest, ProviderError, ProviderResponse
from services.agent.recording import Caller
from services.agent.routing import Route
from services.agent.verdicts import (
    ANALYST_SCHEMA,
    GUARDIAN_SCHEMA,
    GUARDIAN_SKIPPED,
    AnalystResult,
    CallSummary,
    GuardianResult,
    InvalidOutput,
    Outcome,
    analyst_failure,
    compose,
    failure_outcome,
    parse_analyst,
    parse_guardian,
    post_process_analyst,
)

ANALYST = "analyst"
GUARDIAN = "guardian"
ANALYST_TOOL = (
    "analyst_decision",
    "Record your verdict on the proposed BUY: decision, confidence, reasoning.",
)
GUARDIAN_TOOL = ("guardian_decision", "Record your risk verdict on the proposed BUY: decision, reasoning.")
DEFAULT_TIMEOUT_SECONDS = 40.0
#: The outer net: calls already stop at the deadline; this catches anything else that hangs.
DEADLINE_GRACE_SECONDS = 1.0


@dataclass
class _Run:
    """Per-review mutable context carried in the graph state: the deadline and the call log."""

    deadline: float
    log: list[CallSummary] = field(default_factory=list)

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


class ReviewState(TypedDict, total=False):
    plan: ReviewPlan
    route: Route
    run: _Run
    analyst: AnalystResult
    guardian: GuardianResult


def _no_output_detail(response: ProviderResponse, tool: str) -> str:
    if response.output_error:
        return response.output_error
    prose = " ".join(response.text.split())[:200]
    return f"model answered without calling {tool} (stop_reason={response.stop_reason}): {prose!r}"


class Reviewer:
    """Runs the graph for one plan on one route and returns the :class:`Outcome`."""

    def __init__(
        self,
        caller: Caller,
        prompts: PromptSet,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_tokens: int = 1024,
    ) -> None:
        self.caller = caller
        self.prompts = prompts
        self.timeout_seconds = timeout_seconds
        self.max_tokens = max_tokens
        self._graph = self._compile()

    def _compile(self) -> Any:
        from langgraph.graph import StateGraph  # imported here: see the module docstring

        graph = StateGraph(ReviewState)
        graph.add_node(ANALYST, self._analyst)
        graph.add_node(GUARDIAN, self._guardian)
        graph.add_edge(START, ANALYST)
        graph.add_conditional_edges(ANALYST, self._after_analyst, [GUARDIAN, END])
        graph.add_edge(GUARDIAN, END)
        return graph.compile()

    async def _invoke(self, state: ReviewState) -> dict[str, Any]:
        result: dict[str, Any] = await self._graph.ainvoke(state)
        return result

    async def review(self, plan: ReviewPlan, route: Route) -> Outcome:
        loop = asyncio.get_running_loop()
        run = _Run(deadline=loop.time() + self.timeout_seconds)
        try:
            async with asyncio.timeout(self.timeout_seconds + DEADLINE_GRACE_SECONDS):
                state = await self._invoke({"plan": plan, "route": route, "run": run})
            outcome = compose(state[ANALYST], state.get(GUARDIAN))
        except TransientError:
            raise
        except TimeoutError:
            outcome = failure_outcome(ErrorKind.TIMEOUT, "review deadline exceeded")
        except ProviderError as exc:
            outcome = failure_outcome(exc.kind, exc.message)
        except Exception as exc:
            outcome = failure_outcome(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}")
        return replace(outcome, calls=tuple(run.log))

    # -- nodes ---------------------------------------------------------------------------------
    async def _analyst(self, state: ReviewState) -> dict[str, Any]:
        plan, run = state["plan"], state["run"]
        prompt = self.prompts.analyst
        request = self._request(
            ANALYST,
            plan,
            state["route"],
            prompt,
            analyst_user_message(plan, prompt),
            ANALYST_TOOL,
            ANALYST_SCHEMA,
            plan.patterns.as_dict(),
        )
        try:
            response = await self.caller.call(request, run.remaining(), run.log)
        except ProviderError as exc:
            if exc.kind in (ErrorKind.TIMEOUT, ErrorKind.RECORD_MISSING):
                raise
            return {ANALYST: analyst_failure(exc.kind, exc.message)}
        try:
            output = parse_analyst(response.output, _no_output_detail(response, ANALYST_TOOL[0]))
        except InvalidOutput as exc:
            return {ANALYST: analyst_failure(ErrorKind.INVALID_OUTPUT, str(exc))}
        return {ANALYST: post_process_analyst(output)}

    def _after_analyst(self, state: ReviewState) -> str:
        return GUARDIAN if state[ANALYST].confirms else END

    async def _guardian(self, state: ReviewState) -> dict[str, Any]:
        if not state[ANALYST].confirms:
            return {GUARDIAN: GUARDIAN_SKIPPED}
        plan, run = state["plan"], state["run"]
        prompt = self.prompts.guardian
        request = self._request(
            GUARDIAN,
            plan,
            state["route"],
            prompt,
            guardian_user_message(plan, prompt),
            GUARDIAN_TOOL,
            GUARDIAN_SCHEMA,
            plan.payload,
        )
        response = await self.caller.call(request, run.remaining(), run.log)
        try:
            output = parse_guardian(response.output, _no_output_detail(response, GUARDIAN_TOOL[0]))
        except InvalidOutput as exc:
            raise ProviderError(ErrorKind.INVALID_OUTPUT, f"guardian output invalid: {exc}") from exc
        return {GUARDIAN: GuardianResult(output.decision, output.reasoning)}

    def _request(
        self,
        node: str,
        plan: ReviewPlan,
        route: Route,
        prompt: PromptFile,
        user: str,
        tool: tuple[str, str],
        schema: dict[str, Any],
        facts: Any,
    ) -> LlmRequest:
        return LlmRequest(
            node=node,
            provider=route.provider,
            model=route.model,
            prompt_version=prompt.name,
            order_id=plan.order.order_id,
            system=prompt.system,
            user=user,
            tool_name=tool[0],
            tool_description=tool[1],
            schema=schema,
            max_tokens=self.max_tokens,
            facts=facts,
        )


class InlineReviewer(Reviewer):
    """The same graph walked in line, without LangGraph: what a backtest reviews with.

    START -> Analyst -> ``_after_analyst`` -> (Guardian ->) END, each node's update merged into
    the state as the graph's channels do (every key is overwritten, none accumulates). A node's
    exception leaves the walk as it leaves ``ainvoke``, so :meth:`Reviewer.review` turns it into
    the same Outcome; ``tests/unit/agent/test_inline_reviewer.py`` compares both on every branch.
    Speed-up: no ~0.75 s import of langgraph/langchain_core/langsmith and ~1 ms less per review.
    """

    def _compile(self) -> None:
        return None

    async def _invoke(self, state: ReviewState) -> dict[str, Any]:
        walked: Any = dict(state)
        walked.update(await self._analyst(walked))
        if self._after_analyst(walked) == GUARDIAN:
            walked.update(await self._guardian(walked))
        return dict(walked)
