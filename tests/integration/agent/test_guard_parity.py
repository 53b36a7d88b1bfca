"""The Redis guardrails decide exactly like the pure, event-time ``GuardBook`` the backtest uses.

One sequence of orders (``guard_sequence.SEQUENCE``) drives both; at every step the pre-call
check must give the same answer (block reason and message, seconds left included), and the
answer the table expects.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis.asyncio import Redis

from services.agent import guard_state
from services.agent.state import GuardStore
from tests.unit.agent.guard_sequence import SEQUENCE, T0, P

pytestmark = pytest.mark.redis


async def test_redis_guard_store_and_pure_guard_book_answer_alike_at_every_step(redis: Redis) -> None:
    store = GuardStore(redis)
    book = guard_state.GuardBook()
    for i, step in enumerate(SEQUENCE):
        ts = T0 + timedelta(minutes=step.minute)
        book, pure = guard_state.admit(book, step.symbol, ts, P)
        stored = await store.admit("parity", step.symbol, ts, P)
        assert stored == pure, f"step {i}: {step}"
        assert (pure.reason if pure else None) is step.blocked, f"step {i}: {step} -> {pure}"
        if pure is None:
            book = guard_state.after_decision(book, step.symbol, ts, step.approved, step.kind, P)
            await store.after_decision("parity", step.symbol, ts, step.approved, step.kind, P)
