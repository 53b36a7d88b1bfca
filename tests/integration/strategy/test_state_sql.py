"""``strategy_state`` through the driver: rows created on first sight, locked in key order, and
every field of a state (position, pending order, last candle and reason) stored and read back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from coinpilot.contracts import Regime
from coinpilot.db import Database
from services.strategy import state
from services.strategy.core import HoldReason, Position, SymbolState

pytestmark = pytest.mark.postgres

RUN = f"strategy-sql-{uuid.uuid4().hex[:8]}"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def holding(symbol: str) -> SymbolState:
    position = Position(
        position_id=f"{symbol}:2024-01-02T03:04Z",
        avg_price=Decimal("43210.12345678"),
        quantity=Decimal("0.00231450"),
        entry_regime=Regime.BEAR,
        opened_at=datetime(2024, 1, 2, 3, 5, tzinfo=UTC),
        high_water_mark=Decimal("44000.5"),
    )
    return SymbolState(
        symbol,
        position,
        pending_order_id=f"{symbol}:2024-01-02T04:00Z:sell",
        last_candle_at=datetime(2024, 1, 2, 4, 0, tzinfo=UTC),
        last_reason=HoldReason.EXIT_PENDING.value,
    )


async def test_new_keys_are_created_empty_and_saved_states_read_back_equal(migrated_db: Database) -> None:
    keys = [(RUN, "USDT-ETH"), (RUN, "USDT-BTC")]
    async with migrated_db.transaction() as conn:
        fresh = await state.lock_states(conn, keys)
    assert fresh == {key: SymbolState(key[1]) for key in keys}

    saved = {
        (RUN, "USDT-BTC"): holding("USDT-BTC"),
        (RUN, "USDT-ETH"): SymbolState("USDT-ETH", last_candle_at=NOW, last_reason="no_signal"),
    }
    async with migrated_db.transaction() as conn:
        await state.save_states(conn, [(run, s) for (run, _), s in saved.items()], NOW)
    # a known key and a new one in the same unit of work
    async with migrated_db.transaction() as conn:
        mixed = await state.lock_states(conn, [*keys, (RUN, "USDT-XRP")])
        everything = await state.load_all(conn, RUN)
    assert mixed == {**saved, (RUN, "USDT-XRP"): SymbolState("USDT-XRP")}
    assert sorted(everything, key=lambda s: s.symbol) == sorted(mixed.values(), key=lambda s: s.symbol)


async def test_a_locked_state_holds_a_second_unit_of_work_until_commit(migrated_db: Database) -> None:
    key = (RUN, "USDT-LOCK")
    async with migrated_db.transaction() as conn:
        await state.lock_states(conn, [key])
    order: list[str] = []
    first_holds = asyncio.Event()

    async def first() -> None:
        async with migrated_db.transaction() as conn:
            await state.lock_states(conn, [key])
            first_holds.set()
            await asyncio.sleep(0.2)
            await state.save_state(conn, RUN, SymbolState("USDT-LOCK", last_reason="first"), NOW)
            order.append("first committed")

    async def second() -> None:
        await first_holds.wait()
        async with migrated_db.transaction() as conn:
            seen = (await state.lock_states(conn, [key]))[key]
            order.append(f"second saw {seen.last_reason}")

    await asyncio.gather(first(), second())
    assert order == ["first committed", "second saw first"]
