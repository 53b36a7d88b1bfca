"""The agent's own handler over its in-memory stores (``service.in_memory_service``, the backtest's agent).

The rules reviewer and a list of hourly aggregates as ``market_data``: no Redis, PostgreSQL or bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from prometheus_client import REGISTRY

from coinpilot.contracts import AiDecision, AiVerdict, HourlyCandle, OrderApproved, RejectReason
from services.agent.context import Bar
from services.agent.core import AgentParams
from services.agent.graph import Reviewer
from services.agent.guard_rules import GuardParams
from services.agent.memory_stores import MemoryGuardStore
from services.agent.prompts import load_prompts
from services.agent.providers import RulesProvider
from services.agent.recording import Caller, CallSource
from services.agent.routing import RULES
from services.agent.service import AgentService, in_memory_service
from services.agent.settings import AgentSettings
from tests.unit.agent.factories import T0, gentle_uptrend, hourly_candle, order
from tests.unit.lib.test_core_purity import io_modules_loaded_by

RUN = "bt"
MINUTE = timedelta(minutes=1)


def agent(hours: Sequence[HourlyCandle] = (), **settings: object) -> AgentService:
    """The in-memory agent whose ``market_data`` holds ``hours``."""
    values: dict[str, object] = {"llm_mode_source": "rules", **settings}
    reviewer = Reviewer(
        Caller({RULES: RulesProvider()}, CallSource.RULES, None), load_prompts("v1"), timeout_seconds=5
    )

    def hours_of(symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
        return [h for h in hours if h.symbol == symbol and start <= h.ts_open < end]

    return in_memory_service(AgentSettings(**values), AgentParams(), reviewer, hours_of)  # type: ignore[arg-type]


def stored_hours(n: int = 24) -> tuple[HourlyCandle, ...]:
    return tuple(hourly_candle(b) for b in gentle_uptrend(n, t0=T0))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_runs_first_order_is_warmed_from_the_history_and_confirmed() -> None:
    service = agent(stored_hours())
    at = T0 + 24 * timedelta(hours=1) + MINUTE

    decision, approved = await service.decide(RUN, order(at))

    assert isinstance(decision, AiDecision) and isinstance(approved, OrderApproved)
    assert (decision.decision, decision.reason_code) == (AiVerdict.CONFIRM, None)
    assert service.book(RUN).bars["KRW-BTC"] == tuple(Bar.of(h) for h in stored_hours())


async def test_a_redelivered_order_gets_the_stored_decision_without_a_second_admission() -> None:
    service = agent(stored_hours())
    proposed = order(T0 + 24 * timedelta(hours=1) + MINUTE)
    reemitted = sample("coinpilot_agent_decisions_reemitted_total")

    first = await service.decide(RUN, proposed)
    again = await service.decide(RUN, proposed)

    assert again == first
    assert sample("coinpilot_agent_decisions_reemitted_total") == reemitted + 1
    guard = service.guard
    assert isinstance(guard, MemoryGuardStore)
    assert sum(guard.book(RUN).hour_calls.values()) == 1  # counted once: one model call


async def test_a_cooldown_in_the_guard_store_skips_the_order_without_a_review() -> None:
    service = agent(stored_hours())
    at = T0 + 24 * timedelta(hours=1) + MINUTE
    await service.guard.after_decision(RUN, "KRW-BTC", at - MINUTE, False, None, GuardParams())

    decision, rejected = await service.decide(RUN, order(at))

    assert isinstance(decision, AiDecision)
    assert (decision.decision, decision.reason_code) == (AiVerdict.SKIP, RejectReason.AI_GUARDRAIL_BLOCKED)
    assert rejected.order_id == decision.order_id


async def test_an_order_whose_last_hour_is_missing_is_decided_at_once() -> None:
    """The live service would wait up to 30 s for that hour; in process nothing can bring it."""
    service = agent(stored_hours(), ai_context_wait_seconds=30.0)
    at = T0 + 25 * timedelta(hours=1) + MINUTE  # hour 24 never closed: the book ends an hour early
    waits = sample("coinpilot_agent_context_waits_total", outcome="timeout")

    async with asyncio.timeout(1):
        decision, _ = await service.decide(RUN, order(at))

    assert isinstance(decision, AiDecision)
    assert service.book(RUN).latest_close("KRW-BTC") == at - MINUTE - timedelta(hours=1)
    assert sample("coinpilot_agent_context_waits_total", outcome="timeout") == waits


async def test_a_runs_first_hourly_candle_warms_the_hours_before_it_and_wins_its_own() -> None:
    service = agent(stored_hours())
    last = gentle_uptrend(24, t0=T0)[-1]
    delivered = Bar(last.ts_open, last.open, 999.0, last.low, 999.0, 1.0)  # unlike the stored hour

    await service.add_hourly_candle(RUN, hourly_candle(delivered))

    assert service.book(RUN).bars["KRW-BTC"] == (*(Bar.of(h) for h in stored_hours()[:-1]), delivered)
    assert "KRW-BTC" not in service.book("another-run").bars


def test_the_handler_loads_no_store_client_bus_or_model_sdk() -> None:
    """What the backtest pays for: its counters (prometheus_client) and the graph's httpx, no more."""
    assert set(io_modules_loaded_by("services.agent.service")) <= {"httpx", "prometheus_client"}
