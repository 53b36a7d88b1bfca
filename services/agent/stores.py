"""What :class:`services.agent.service.AgentService` needs from its stores, and nothing more.

Three seams, each with two implementations that decide alike:

* :class:`Guardrails` - the §5.5 guardrail state: ``state.GuardStore`` (Redis keys) and
  ``memory_stores.MemoryGuardStore`` (the pure ``guard_state.GuardBook`` the keys encode);
* :class:`Decisions` - one stored decision per ``(run_id, order_id)``: ``state.DecisionStore``
  (``agent_decisions``) and ``memory_stores.MemoryDecisionStore``;
* :class:`MarketHistory` - hourly aggregates of the stored 1m candles, to warm a run's context:
  ``state.MarketDataHistory`` (``market_data``) and ``memory_stores.MemoryMarketHistory`` (the
  backtest's own candles).

The warm rule is applied once, here (:func:`load_warm_bars`), whatever the history is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from coinpilot.contracts import AiDecision, HourlyCandle, OrderProposed
from services.agent.context import Bar
from services.agent.core import warm_bars, warm_span
from services.agent.guard_rules import Block, ErrorKind, GuardParams


class Guardrails(Protocol):
    """The guardrails of every run, on the order's event time."""

    async def admit(
        self, run_id: str, symbol: str, ts: datetime, params: GuardParams, order_id: str | None = None
    ) -> Block | None:
        """The pre-call check, then the call accounting (before the call: failures spend budget);
        an ``order_id`` already admitted is admitted again without being counted twice."""
        ...

    async def after_decision(
        self,
        run_id: str,
        symbol: str,
        ts: datetime,
        approved: bool,
        error_kind: ErrorKind | None,
        params: GuardParams,
        order_id: str | None = None,
    ) -> None:
        """§5.5 post-decision update, once per ``order_id`` however often it is asked."""
        ...

    async def refresh_gauges(self) -> None:
        """Show the process's own run's guardrail state on its gauges (on start)."""
        ...


class Decisions(Protocol):
    """One decision per ``(run_id, order_id)``: a redelivered order gets the stored answer."""

    async def find(self, run_id: str, order: OrderProposed) -> AiDecision | None: ...

    async def save(
        self, run_id: str, order: OrderProposed, decision: AiDecision, usage: Sequence[dict[str, Any]]
    ) -> tuple[AiDecision, bool]:
        """Store ``decision`` (and its usage rows) unless one is stored already; returns the stored
        decision and whether this call stored it."""
        ...


class MarketHistory(Protocol):
    """The stored 1m candles of a market, as hourly aggregates."""

    async def hourly_candles(self, symbol: str, start: datetime, end: datetime) -> Sequence[HourlyCandle]:
        """The hourly aggregates (first open, max high, min low, last close, summed volume) of the
        1m candles opened in ``[start, end)``, one per hour with at least one candle."""
        ...


async def load_warm_bars(history: MarketHistory, symbol: str, ts: datetime, keep: int) -> tuple[Bar, ...]:
    """The hours a run's book is warmed with at event time ``ts``: those of :func:`core.warm_span`,
    chosen by :func:`core.warm_bars`."""
    start, end = warm_span(ts, keep)
    return warm_bars(await history.hourly_candles(symbol, start, end), ts, keep)
