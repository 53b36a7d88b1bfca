"""The agent's handler: one order's flow (BEHAVIOUR §5), written once, over its stores' seams.

``app.py`` runs it on the bus over Redis and PostgreSQL; the backtest runs it in process over
:mod:`services.agent.memory_stores` (:func:`in_memory_service`). This module imports no store
client, no bus and no model SDK, so the backtest pays for none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from coinpilot.clock import floor_hour
from coinpilot.contracts import AiDecision, Contract, HourlyCandle, OrderProposed, RejectReason
from services.agent import metrics as m
from services.agent.context import Bar
from services.agent.core import (
    AgentParams,
    ContextBook,
    ReviewPlan,
    Skip,
    has_holes,
    implausible,
    needs_warm,
    on_hourly_candle,
    order_outputs,
    plan_review,
    review_decision,
    skip_decision,
    warm_book,
    warm_span,
)
from services.agent.graph import Reviewer
from services.agent.memory_stores import (
    HourlyCandlesOf,
    MemoryDecisionStore,
    MemoryGuardStore,
    MemoryMarketHistory,
)
from services.agent.pricing import estimate_cost_usd
from services.agent.routing import Route, RoutingConfig, choose_route
from services.agent.settings import AgentSettings
from services.agent.stores import Decisions, Guardrails, MarketHistory, load_warm_bars
from services.agent.usage import usage_rows
from services.agent.verdicts import CallSummary, Outcome

if TYPE_CHECKING:
    from prometheus_client import Counter

    from coinpilot.bus import Delivery


class AgentService:
    """The agent's handlers and the state they share: one context book per run."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        params: AgentParams,
        reviewer: Reviewer,
        routing: RoutingConfig,
        guard: Guardrails,
        decisions: Decisions,
        log: logging.Logger,
        keepalive_seconds: float | None = None,
        context_wait_seconds: float | None = None,
        market: MarketHistory | None = None,
    ) -> None:
        self.settings = settings
        self.keepalive_seconds = keepalive_seconds or settings.ai_keepalive_seconds
        self.context_wait_seconds = (
            settings.ai_context_wait_seconds if context_wait_seconds is None else context_wait_seconds
        )
        self.params = params
        self.reviewer = reviewer
        self.routing = routing
        self.guard = guard
        self.decisions = decisions
        self.log = log
        self.market = market
        self.books: dict[str, ContextBook] = {}
        self._candles = asyncio.Condition()
        self._filled: dict[tuple[str, str], datetime] = {}
        """(run, symbol) -> the end of the warm span last filled from the history (once an hour)."""
        self._slots = asyncio.Semaphore(settings.ai_max_concurrency)

    def book(self, run_id: str) -> ContextBook:
        return self.books.get(run_id, ContextBook())

    # -- candles.1h ----------------------------------------------------------------------------
    async def on_candle(self, delivery: Delivery[HourlyCandle]) -> Sequence[Contract]:
        await self.add_hourly_candle(delivery.run_id, delivery.message)
        return ()

    async def add_hourly_candle(self, run_id: str, candle: HourlyCandle) -> None:
        """Put a closed hour in the run's book (warming the book first if it is the run's first
        message of the symbol)."""
        await self._warm_if_new(run_id, candle.symbol, candle.ts_event)
        async with self._candles:
            self.books[run_id] = on_hourly_candle(self.book(run_id), candle, self.params)
            self._candles.notify_all()

    # -- orders.proposed -----------------------------------------------------------------------
    async def on_order(self, delivery: Delivery[OrderProposed]) -> Sequence[Contract]:
        async with self._kept_alive(delivery):
            return await self.decide(delivery.run_id, delivery.message)

    async def decide(self, run_id: str, order: OrderProposed) -> Sequence[Contract]:
        """The §5 flow of one proposed BUY: stored answer, plausibility, context, pre-filter,
        guardrails, review, guardrail update, store; returns the decision and the order's fate."""
        stored = await self.decisions.find(run_id, order)
        if stored is not None:
            m.DECISIONS_REEMITTED.inc()
            return order_outputs(order, stored)
        refused = implausible(order)
        if refused is not None:
            skipped = m.AI_PREFILTER_SKIPS.labels(str(refused.reason))
            return await self._skip(run_id, order, refused.reason, refused.message, skipped)
        warmed = await self._warm_if_new(run_id, order.symbol, order.ts_event)
        await self._await_last_closed_hour(run_id, order)
        if not warmed:
            await self._fill_holes(run_id, order.symbol, order.ts_event)
        plan = plan_review(self.book(run_id), order, self.params)
        m.AI_CONTEXT_CANDLES.observe(plan.context_len)
        if isinstance(plan, Skip):
            skipped = m.AI_PREFILTER_SKIPS.labels(str(plan.reason))
            return await self._skip(run_id, order, plan.reason, plan.message, skipped)
        block = await self.guard.admit(
            run_id, order.symbol, order.ts_event, plan.regime_params.guard, order_id=order.order_id
        )
        if block is not None:
            blocked = m.AI_GUARDRAIL_BLOCKS.labels(str(block.reason))
            return await self._skip(run_id, order, RejectReason.AI_GUARDRAIL_BLOCKED, block.message, blocked)
        route = choose_route(order.symbol, plan.canary_marker, self.routing)
        outcome = await self._review(plan, route)
        count_calls(outcome.calls)  # they happened (and cost) whichever delivery stores its decision
        decision = review_decision(order, outcome, route, self.reviewer.prompts.sha256)
        pipeline_error = str(outcome.error_kind) if outcome.runner_failed and outcome.error_kind else None
        usage = (
            usage_rows(run_id, order, outcome.calls, pipeline_error)
            if self.settings.llm_usage_enabled
            else []
        )
        # Guardrails first, once per order: a crash between the two steps leaves the update
        # applied and the decision unstored, and the redelivery (its calls answered from their
        # records) stores the same decision without updating again. The other way round, a crash
        # would leave a stored decision whose cooldown or streak was never applied.
        await self.guard.after_decision(
            run_id,
            order.symbol,
            order.ts_event,
            outcome.approved,
            outcome.error_kind,
            plan.regime_params.guard,
            order_id=order.order_id,
        )
        stored, won = await self.decisions.save(run_id, order, decision, usage)
        if won:
            count_decision(stored)
        return order_outputs(order, stored)

    async def _skip(
        self, run_id: str, order: OrderProposed, reason: RejectReason, message: str, skipped: Counter
    ) -> Sequence[Contract]:
        """No model call: no cooldown, no notification-worthy review; stored so a redelivery repeats
        it. ``skipped`` (the pre-filter's or the guardrails' counter) moves once per order."""
        stored, won = await self.decisions.save(run_id, order, skip_decision(order, reason, message), ())
        if won:
            skipped.inc()
            count_decision(stored)
        return order_outputs(order, stored)

    async def _review(self, plan: ReviewPlan, route: Route) -> Outcome:
        async with self._slots:
            m.REVIEWS_IN_FLIGHT.inc()
            started = time.perf_counter()
            try:
                return await self.reviewer.review(plan, route)
            finally:
                m.REVIEWS_IN_FLIGHT.dec()
                m.REVIEW_SECONDS.observe(time.perf_counter() - started)

    async def _warm_if_new(self, run_id: str, symbol: str, ts: datetime) -> bool:
        """The first order or hourly candle of a run for a symbol warms that run's book from the
        market history as of the message's event time (rule: :func:`stores.load_warm_bars`), so a
        replay run id starts with the context a live deployment has; hours already in the book win.
        Without the context a decision would differ, so the read is never skipped: a lost database
        surfaces from ``db.session()`` as ``TransientError`` and the order waits in place, while any
        other failure is the ladder's to judge (a bug is not an outage to wait out for ever)."""
        if self.market is None or not needs_warm(self.book(run_id), symbol):
            return False
        bars = await load_warm_bars(self.market, symbol, ts, self.params.keep_bars)
        await self.add_bars(run_id, symbol, bars)
        return True

    async def _fill_holes(self, run_id: str, symbol: str, ts: datetime) -> None:
        """Before an order is reviewed, fill the hours of its warm span the book lacks from the
        market history (same rule as the warm, hours in the book win). With several replicas on
        ``agent-candles`` each replica's book holds only its share of the hourly candles; with
        one replica the book is whole once the history is (nothing read) or the history has no
        more than the book (nothing added). After the context wait, so an hour about to arrive on
        ``candles.1h`` still comes from there. Read at most once per run, symbol and hour: an
        hour missing from the history too (a gap in the market) is not read again and again."""
        if self.market is None or not has_holes(self.book(run_id), symbol, ts, self.params.keep_bars):
            return
        span_end = warm_span(ts, self.params.keep_bars)[1]
        if self._filled.get((run_id, symbol)) == span_end:
            return
        bars = await load_warm_bars(self.market, symbol, ts, self.params.keep_bars)
        await self.add_bars(run_id, symbol, bars)
        self._filled[(run_id, symbol)] = span_end

    async def add_bars(self, run_id: str, symbol: str, bars: Sequence[Bar]) -> None:
        """Merge warmed hours into a run's book; hours already in it win (:func:`core.warm_book`)."""
        async with self._candles:
            self.books[run_id] = warm_book(self.book(run_id), symbol, bars, self.params.keep_bars)
            self._candles.notify_all()

    async def _await_last_closed_hour(self, run_id: str, order: OrderProposed) -> None:
        """Give the hourly candle that closed just before the order a moment to arrive.

        It travels one hop (indicator -> agent) while the order travels three (indicator ->
        strategy -> risk -> agent), so it nearly always wins; when it has not, waiting briefly keeps
        the context the same as in a replay. A longer gap is not waited for, and a wait of 0 s is
        none (the backtest: in lockstep nothing can arrive while an order waits).
        """
        if self.context_wait_seconds <= 0:
            return
        wanted = floor_hour(order.ts_event)
        latest = self.book(run_id).latest_close(order.symbol)
        if latest is None or latest >= wanted or latest < wanted - timedelta(hours=1):
            return
        m.CONTEXT_WAITING.inc()
        outcome = "arrived"
        try:
            async with asyncio.timeout(self.context_wait_seconds), self._candles:
                await self._candles.wait_for(
                    lambda: (self.book(run_id).latest_close(order.symbol) or wanted) >= wanted
                )
        except TimeoutError:
            outcome = "timeout"
        finally:
            m.CONTEXT_WAITING.dec()
        m.CONTEXT_WAITS.labels(outcome).inc()

    @contextlib.asynccontextmanager
    async def _kept_alive(self, delivery: Delivery[OrderProposed]) -> AsyncIterator[None]:
        """Tell JetStream the order is still being worked on while the model thinks, so a slow
        review (up to the 40 s deadline) never exceeds the ack wait and gets redelivered."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.keepalive_seconds)
                try:
                    await delivery.keepalive()
                    m.KEEPALIVES.inc()
                except Exception as exc:  # a lost connection: the redelivery will be idempotent
                    self.log.warning("keepalive for %s failed: %s", delivery.message.order_id, exc)

        task = asyncio.create_task(tick(), name=f"keepalive:{delivery.message.order_id}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        await self.reviewer.caller.close()


def in_memory_service(
    settings: AgentSettings,
    params: AgentParams,
    reviewer: Reviewer,
    hourly_candles_of: HourlyCandlesOf,
    log: logging.Logger | None = None,
) -> AgentService:
    """The agent over in-process stores (the backtest): no Redis, no PostgreSQL, no bus.

    ``hourly_candles_of`` stands for ``market_data``. The context wait is off: an in-process run
    handles one message at a time, so no hourly candle can arrive while an order waits.
    """
    return AgentService(
        settings=settings,
        params=params,
        reviewer=reviewer,
        routing=settings.routing(),
        guard=MemoryGuardStore(),
        decisions=MemoryDecisionStore(),
        log=log or logging.getLogger("coinpilot.agent"),
        context_wait_seconds=0,
        market=MemoryMarketHistory(hourly_candles_of),
    )


def count_calls(calls: Sequence[CallSummary]) -> None:
    """Every model call is a request (answered live, from a record, or missing from the records);
    latency, tokens and cost only for the calls that went over the network."""
    for call in calls:
        m.AI_REQUESTS.labels(call.provider, call.model, call.status).inc()
        if not call.over_network:
            continue
        m.AI_REQUEST_SECONDS.labels(call.provider).observe(call.latency_ms / 1000)
        cost = estimate_cost_usd(call.model, call.input_tokens, call.output_tokens)
        if cost is not None:
            m.AI_COST_USD.labels(call.provider, call.model).inc(float(cost))
        if call.input_tokens is not None:
            m.LLM_TOKENS.labels(call.provider, "input").inc(call.input_tokens)
        if call.output_tokens is not None:
            m.LLM_TOKENS.labels(call.provider, "output").inc(call.output_tokens)


def count_decision(decision: AiDecision) -> None:
    """Once per order: only the delivery that stored the decision counts it."""
    m.AI_DECISIONS.labels(str(decision.decision), str(decision.reason_code or "")).inc()
