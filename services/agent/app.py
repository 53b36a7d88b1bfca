"""Composition root of the agent: stores, providers and reviewer wired into two consumers.

``orders.proposed.*`` (durable ``agent-orders``) -> ``ai.decisions.<SYM>`` + ``orders.approved.<SYM>``
or ``orders.rejected.<SYM>``; ``candles.1h.*`` (durable ``agent-candles``) -> the market context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from prometheus_client import Counter
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError

from coinpilot.clock import floor_hour
from coinpilot.contracts import AiDecision, Contract, HourlyCandle, OrderProposed, RejectReason
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.agent import metrics as m
from services.agent.core import (
    AgentParams,
    ContextBook,
    ReviewPlan,
    Skip,
    implausible,
    needs_warm,
    on_hourly_candle,
    order_outputs,
    plan_review,
    review_decision,
    skip_decision,
    warm_book,
)
from services.agent.graph import Reviewer
from services.agent.pricing import estimate_cost_usd
from services.agent.prompts import load_prompts
from services.agent.providers import Provider, RulesProvider
from services.agent.recording import Caller, CallSource
from services.agent.routing import ANTHROPIC, OPENAI, RULES, Route, RoutingConfig, choose_route
from services.agent.sdk_providers import AnthropicProvider, OpenAIProvider
from services.agent.settings import AgentSettings, load_params
from services.agent.state import (
    LIVE_RUN,
    CallRecordStore,
    DecisionStore,
    GuardStore,
    Sessions,
    load_closed_hours,
    load_warm_bars,
    usage_rows,
)
from services.agent.verdicts import CallSummary, Outcome


class AgentService:
    """The agent's handlers and the state they share: one context book per run."""

    def __init__(
        self,
        *,
        settings: AgentSettings,
        params: AgentParams,
        reviewer: Reviewer,
        routing: RoutingConfig,
        guard: GuardStore,
        decisions: DecisionStore,
        log: logging.Logger,
        keepalive_seconds: float | None = None,
        market: Sessions | None = None,
    ) -> None:
        self.settings = settings
        self.keepalive_seconds = keepalive_seconds or settings.ai_keepalive_seconds
        self.params = params
        self.reviewer = reviewer
        self.routing = routing
        self.guard = guard
        self.decisions = decisions
        self.log = log
        self.market = market
        self.books: dict[str, ContextBook] = {}
        self._candles = asyncio.Condition()
        self._slots = asyncio.Semaphore(settings.ai_max_concurrency)

    def book(self, run_id: str) -> ContextBook:
        return self.books.get(run_id, ContextBook())

    # -- candles.1h ----------------------------------------------------------------------------
    async def on_candle(self, delivery: Delivery[HourlyCandle]) -> Sequence[Contract]:
        candle = delivery.message
        await self._warm_if_new(delivery.run_id, candle.symbol, candle.ts_event)
        async with self._candles:
            self.books[delivery.run_id] = on_hourly_candle(
                self.book(delivery.run_id), delivery.message, self.params
            )
            self._candles.notify_all()
        return ()

    # -- orders.proposed -----------------------------------------------------------------------
    async def on_order(self, delivery: Delivery[OrderProposed]) -> Sequence[Contract]:
        async with self._kept_alive(delivery):
            return await self._decide(delivery.run_id, delivery.message)

    async def _decide(self, run_id: str, order: OrderProposed) -> Sequence[Contract]:
        stored = await self.decisions.find(run_id, order)
        if stored is not None:
            m.DECISIONS_REEMITTED.inc()
            return order_outputs(order, stored)
        refused = implausible(order)
        if refused is not None:
            skipped = m.AI_PREFILTER_SKIPS.labels(str(refused.reason))
            return await self._skip(run_id, order, refused.reason, refused.message, skipped)
        await self._warm_if_new(run_id, order.symbol, order.ts_event)
        await self._await_last_closed_hour(run_id, order)
        plan = plan_review(self.book(run_id), order, self.params)
        m.AI_CONTEXT_CANDLES.observe(plan.context_len)
        if isinstance(plan, Skip):
            skipped = m.AI_PREFILTER_SKIPS.labels(str(plan.reason))
            return await self._skip(run_id, order, plan.reason, plan.message, skipped)
        block = await self.guard.admit(run_id, order.symbol, order.ts_event, plan.regime_params.guard)
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
        stored, won = await self.decisions.save(run_id, order, decision, usage)
        if won:
            await self.guard.after_decision(
                run_id,
                order.symbol,
                order.ts_event,
                outcome.approved,
                outcome.error_kind,
                plan.regime_params.guard,
            )
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

    async def _warm_if_new(self, run_id: str, symbol: str, ts: datetime) -> None:
        """The first order or hourly candle of a run for a symbol warms that run's book from
        ``market_data`` as of the message's event time (rule: :func:`core.warm_bars`), so a replay
        run id starts with the context a live deployment has; hours already in the book win.
        Without the context a decision would differ, so the read is never skipped: a lost database
        surfaces from ``db.session()`` as ``TransientError`` and the order waits in place, while any
        other failure is the ladder's to judge (a bug is not an outage to wait out for ever)."""
        if self.market is None or not needs_warm(self.book(run_id), symbol):
            return
        keep = self.params.keep_bars
        bars = await load_warm_bars(self.market, symbol, ts, keep)
        async with self._candles:
            self.books[run_id] = warm_book(self.book(run_id), symbol, bars, keep)
            self._candles.notify_all()

    async def _await_last_closed_hour(self, run_id: str, order: OrderProposed) -> None:
        """Give the hourly candle that closed just before the order a moment to arrive.

        It travels one hop (indicator -> agent) while the order travels three (indicator ->
        strategy -> risk -> agent), so it nearly always wins; when it has not, waiting briefly keeps
        the context the same as in a replay. A longer gap is not waited for.
        """
        wanted = floor_hour(order.ts_event)
        latest = self.book(run_id).latest_close(order.symbol)
        if latest is None or latest >= wanted or latest < wanted - timedelta(hours=1):
            return
        m.CONTEXT_WAITING.inc()
        outcome = "arrived"
        try:
            async with asyncio.timeout(self.settings.ai_context_wait_seconds), self._candles:
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

    # -- lifecycle -----------------------------------------------------------------------------
    async def warm(self, db: Sessions, symbols: Sequence[str]) -> None:
        """Fill the live book from market_data (1m rows resampled to closed hours); hours that
        already arrived on candles.1h are kept as they are."""
        keep = self.params.keep_bars
        for symbol in symbols:
            try:
                bars = await load_closed_hours(db, symbol, keep)
            except (SQLAlchemyError, OSError) as exc:
                self.log.warning("could not warm the context of %s from market_data: %s", symbol, exc)
                continue
            async with self._candles:
                self.books[LIVE_RUN] = warm_book(self.book(LIVE_RUN), symbol, bars, keep)


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


def build_providers(settings: AgentSettings) -> dict[str, Provider]:
    providers: dict[str, Provider] = {RULES: RulesProvider()}
    common = {
        "timeout_seconds": settings.llm_request_timeout_seconds,
        "max_retries": settings.llm_max_retries,
    }
    if settings.anthropic_api_key is not None:
        providers[ANTHROPIC] = AnthropicProvider(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            **common,
        )
    if settings.openai_api_key is not None:
        providers[OPENAI] = OpenAIProvider(
            api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url, **common
        )
    return providers


def create_service(
    settings: AgentSettings,
    params: AgentParams,
    db: Sessions,
    redis: Redis | None,
    log: logging.Logger,
    ack_wait_seconds: float | None = None,
    gauge_run_id: str = LIVE_RUN,
) -> AgentService:
    """Wire stores, providers and the reviewer (used by :func:`build` and by the tests).
    ``gauge_run_id``: the run whose guardrail state the ``coinpilot_ai_*`` gauges show."""
    source = settings.effective_source()
    records = None if source is CallSource.RULES else CallRecordStore(db)
    reviewer = Reviewer(
        Caller(build_providers(settings), source, records),
        load_prompts(settings.prompt_version),
        timeout_seconds=settings.ai_timeout_seconds,
        max_tokens=settings.llm_max_tokens,
    )
    return AgentService(
        settings=settings,
        params=params,
        reviewer=reviewer,
        routing=settings.routing(),
        guard=GuardStore(redis, gauge_run_id),
        decisions=DecisionStore(db),
        log=log,
        market=db,
        keepalive_seconds=min(settings.ai_keepalive_seconds, ack_wait_seconds / 3)
        if ack_wait_seconds
        else None,
    )


def build(rt: Runtime, settings: AgentSettings | None = None) -> ServiceDefinition:
    """Build the agent over the runtime's database and cache."""
    if rt.db is None:
        raise ConfigError("the agent needs a database (agent_decisions, llm_call_records)")
    settings = settings or AgentSettings()
    redis = rt.cache.client if rt.cache is not None else None
    service = create_service(
        settings,
        load_params(rt.settings.strategy_config),
        rt.db,
        redis,
        rt.log,
        ack_wait_seconds=rt.settings.ack_wait_seconds,
        gauge_run_id=rt.settings.run_id,
    )
    rt.extras["agent"] = service
    rt.log.info(
        "agent reviews with source=%s, primary route %s",
        service.reviewer.caller.source,
        choose_route("KRW-BTC", "", service.routing).model_used,
    )

    async def on_start(runtime: Runtime) -> None:
        await service.guard.refresh_gauges()
        if runtime.db is not None:
            await service.warm(runtime.db, runtime.settings.symbols)

    async def on_stop(runtime: Runtime) -> None:
        await service.close()

    return ServiceDefinition(
        name="agent",
        consumers=[
            Consumer(
                subject="orders.proposed.*",
                durable="agent-orders",
                parse=parser_for(OrderProposed),
                handler=service.on_order,
                batch_size=1,  # a review may take 40 s: never hold queued orders past their ack wait
            ),
            Consumer(
                subject="candles.1h.*",
                durable="agent-candles",
                parse=parser_for(HourlyCandle),
                handler=service.on_candle,
            ),
        ],
        on_start=on_start,
        on_stop=on_stop,
    )
