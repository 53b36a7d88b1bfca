"""Composition root of the agent: Redis and PostgreSQL stores, providers and reviewer wired into the
handler (:class:`services.agent.service.AgentService`) and its two consumers.

``orders.proposed.*`` (durable ``agent-orders``) -> ``ai.decisions.<SYM>`` + ``orders.approved.<SYM>``
or ``orders.rejected.<SYM>``; ``candles.1h.*`` (durable ``agent-candles``) -> the market context.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError

from coinpilot.contracts import HourlyCandle, OrderProposed
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Runtime, ServiceDefinition, parser_for
from services.agent.core import AgentParams
from services.agent.graph import Reviewer
from services.agent.prompts import load_prompts
from services.agent.providers import Provider, RulesProvider
from services.agent.recording import Caller, CallSource
from services.agent.routing import ANTHROPIC, OPENAI, RULES, choose_route
from services.agent.sdk_providers import AnthropicProvider, OpenAIProvider
from services.agent.service import AgentService
from services.agent.settings import AgentSettings, load_params
from services.agent.state import (
    LIVE_RUN,
    CallRecordStore,
    DecisionStore,
    GuardStore,
    MarketDataHistory,
    Sessions,
    load_closed_hours,
)


async def warm_live_context(service: AgentService, db: Sessions, symbols: Sequence[str]) -> None:
    """Fill the live book from market_data (1m rows resampled to closed hours) on start; hours that
    already arrived on candles.1h are kept as they are."""
    for symbol in symbols:
        try:
            bars = await load_closed_hours(db, symbol, service.params.keep_bars)
        except (SQLAlchemyError, OSError) as exc:
            service.log.warning("could not warm the context of %s from market_data: %s", symbol, exc)
            continue
        await service.add_bars(LIVE_RUN, symbol, bars)


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
        market=MarketDataHistory(db),
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
            await warm_live_context(service, runtime.db, runtime.settings.symbols)

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
