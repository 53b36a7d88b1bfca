"""The agent's in-memory stores answer like the ones they stand for (``services.agent.memory_stores``).

Decisions keep ``agent_decisions``' idempotency (the first save wins); the guardrails answer like
the pure ``GuardBook`` at every step of the parity sequence the Redis store is held to; the
market history is read once per warm, over the span the warm rule names. Like the cores, they
import no I/O library.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from coinpilot.contracts import HourlyCandle, RejectReason
from services.agent import guard_state
from services.agent.context import Bar
from services.agent.core import skip_decision
from services.agent.memory_stores import MemoryDecisionStore, MemoryGuardStore, MemoryMarketHistory
from services.agent.stores import load_warm_bars
from tests.unit.agent.factories import HOUR, T0, bar, hourly_candle, order
from tests.unit.agent.guard_sequence import COOLDOWN, SEQUENCE, P
from tests.unit.agent.guard_sequence import T0 as GUARD_T0
from tests.unit.lib.test_core_purity import io_modules_loaded_by

AT = T0 + 30 * HOUR + timedelta(minutes=5)


class TestMemoryDecisionStore:
    async def test_the_first_save_of_an_order_is_stored_and_found(self) -> None:
        store, proposed = MemoryDecisionStore(), order(AT)
        decision = skip_decision(proposed, RejectReason.AI_CONTEXT_SHORT, "short")
        assert await store.find("bt", proposed) is None
        assert await store.save("bt", proposed, decision, ()) == (decision, True)
        assert await store.find("bt", proposed) == decision

    async def test_a_second_save_of_the_same_order_returns_the_first_decision_unstored(self) -> None:
        store, proposed = MemoryDecisionStore(), order(AT)
        first = skip_decision(proposed, RejectReason.AI_CONTEXT_SHORT, "first")
        later = skip_decision(proposed, RejectReason.AI_GUARDRAIL_BLOCKED, "later")
        await store.save("bt", proposed, first, [{"route": "first"}])
        assert await store.save("bt", proposed, later, [{"route": "later"}]) == (first, False)
        assert await store.find("bt", proposed) == first
        assert store.usage[("bt", proposed.order_id)] == ({"route": "first"},)

    async def test_each_run_stores_its_own_decision_of_an_order(self) -> None:
        store, proposed = MemoryDecisionStore(), order(AT)
        one = skip_decision(proposed, RejectReason.AI_CONTEXT_SHORT, "one")
        other = skip_decision(proposed, RejectReason.FALLING_KNIFE, "other")
        await store.save("run-1", proposed, one, ())
        assert await store.save("run-2", proposed, other, ()) == (other, True)
        assert await store.find("run-1", proposed) == one


class TestMemoryGuardStore:
    async def test_it_answers_like_the_pure_guard_book_at_every_step(self) -> None:
        store, book = MemoryGuardStore(), guard_state.GuardBook()
        for i, step in enumerate(SEQUENCE):
            ts = GUARD_T0 + timedelta(minutes=step.minute)
            book, pure = guard_state.admit(book, step.symbol, ts, P)
            assert await store.admit("parity", step.symbol, ts, P) == pure, f"step {i}: {step}"
            assert (pure.reason if pure else None) is step.blocked, f"step {i}: {step} -> {pure}"
            if pure is None:
                book = guard_state.after_decision(book, step.symbol, ts, step.approved, step.kind, P)
                await store.after_decision("parity", step.symbol, ts, step.approved, step.kind, P)
            assert store.book("parity") == book, f"step {i}: {step}"

    async def test_a_cooldown_in_one_run_never_blocks_another(self) -> None:
        store = MemoryGuardStore()
        await store.after_decision("run-1", "KRW-BTC", GUARD_T0, False, None, P)
        blocked = await store.admit("run-1", "KRW-BTC", GUARD_T0 + timedelta(minutes=1), P)
        assert blocked is not None and blocked.reason is COOLDOWN
        assert await store.admit("run-2", "KRW-BTC", GUARD_T0 + timedelta(minutes=1), P) is None


class TestMemoryMarketHistory:
    async def test_a_warm_reads_the_span_before_the_event_hour_and_keeps_the_closed_hours(self) -> None:
        stored = [hourly_candle(bar(h, 100.0 + h)) for h in range(40)]
        asked: list[tuple[str, datetime, datetime]] = []

        def hours_of(symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
            asked.append((symbol, start, end))
            return stored  # more than asked for: the rule still keeps only the span's closed hours

        bars = await load_warm_bars(MemoryMarketHistory(hours_of), "KRW-BTC", AT, keep=4)

        assert asked == [("KRW-BTC", T0 + 26 * HOUR, T0 + 30 * HOUR)]
        assert bars == tuple(Bar.of(stored[h]) for h in (26, 27, 28, 29))


@pytest.mark.parametrize("module", ["stores", "memory_stores", "usage"])
def test_the_store_seams_and_in_memory_stores_import_no_io_library(module: str) -> None:
    assert io_modules_loaded_by(f"services.agent.{module}") == []
