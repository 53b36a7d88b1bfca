"""The agent's stores in process memory (:mod:`services.agent.stores`), for the backtest and tests.

Pure Python: the guardrails are the pure :class:`guard_state.GuardBook` that ``state.GuardStore``
encodes in Redis, decisions a dictionary with ``agent_decisions``' idempotency, and the market
history whatever the caller holds as ``market_data``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from coinpilot.contracts import AiDecision, HourlyCandle, OrderProposed
from services.agent import guard_state
from services.agent.guard_rules import Block, ErrorKind, GuardParams
from services.agent.guard_state import GuardBook

#: ``(symbol, start, end)`` -> the hourly aggregates of the 1m candles opened in ``[start, end)``.
HourlyCandlesOf = Callable[[str, datetime, datetime], Sequence[HourlyCandle]]


class MemoryGuardStore:
    """One :class:`GuardBook` per run, changed by the same pure rules as the Redis keys."""

    def __init__(self) -> None:
        self.books: dict[str, GuardBook] = {}
        self.admitted: set[tuple[str, str]] = set()
        self.settled: set[tuple[str, str]] = set()

    def book(self, run_id: str) -> GuardBook:
        return self.books.get(run_id, GuardBook())

    async def admit(
        self, run_id: str, symbol: str, ts: datetime, params: GuardParams, order_id: str | None = None
    ) -> Block | None:
        if order_id is not None and (run_id, order_id) in self.admitted:
            return None
        self.books[run_id], block = guard_state.admit(self.book(run_id), symbol, ts, params)
        if order_id is not None and block is None:
            self.admitted.add((run_id, order_id))
        return block

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
        if order_id is not None:
            if (run_id, order_id) in self.settled:
                return
            self.settled.add((run_id, order_id))
        self.books[run_id] = guard_state.after_decision(
            self.book(run_id), symbol, ts, approved, error_kind, params
        )

    async def refresh_gauges(self) -> None:
        """Nothing to show: the gauges follow the live run's Redis keys, never an in-process run."""


class MemoryDecisionStore:
    """Decisions keyed by ``(run_id, order_id)``; the first one saved wins, as in ``agent_decisions``."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str], AiDecision] = {}
        self.usage: dict[tuple[str, str], tuple[dict[str, Any], ...]] = {}

    async def find(self, run_id: str, order: OrderProposed) -> AiDecision | None:
        return self.decisions.get((run_id, order.order_id))

    async def save(
        self, run_id: str, order: OrderProposed, decision: AiDecision, usage: Sequence[dict[str, Any]]
    ) -> tuple[AiDecision, bool]:
        key = (run_id, order.order_id)
        stored = self.decisions.get(key)
        if stored is not None:
            return stored, False
        self.decisions[key] = decision
        self.usage[key] = tuple(usage)
        return decision, True


class MemoryMarketHistory:
    """The hourly aggregates the caller's ``market_data`` stand-in gives."""

    def __init__(self, hourly_candles_of: HourlyCandlesOf) -> None:
        self._hourly_candles_of = hourly_candles_of

    async def hourly_candles(self, symbol: str, start: datetime, end: datetime) -> Sequence[HourlyCandle]:
        return self._hourly_candles_of(symbol, start, end)
