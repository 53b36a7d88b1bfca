"""Risk's SQL and Redis (``services/risk/state.py``) against the real PostgreSQL and Redis.

The handlers' statements run on the driver's connection (``Database.transaction()``): the state
row is created and locked in one statement on a run's first use, two units of work on a run
serialise on that lock (the second sees everything the first committed, a new trading day too),
and what is saved reads back identical, also through the ORM models other readers use.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.cache import Cache, keys
from coinpilot.db import DailyRiskState, Database, RiskAudit, RiskState
from coinpilot.errors import TransientError
from services.risk import state
from services.risk.core import AuditEntry, DailyState
from services.risk.core import RiskState as CoreState
from tests.integration.risk.harness import new_run_id
from tests.support.servers import free_port
from tests.unit.risk.factories import T0, YAML

pytestmark = pytest.mark.postgres
DAY = T0.date()


def a_state(day: date = DAY, losses: int = 2, pending: dict[str, str] | None = None) -> CoreState:
    return CoreState(
        daily=DailyState(day, Decimal("-1234.50000001"), 3, 1, 4, is_trading_halted=True),
        consecutive_losses=losses,
        cooldown_until=T0 + timedelta(hours=6),
        pending_orders={"KRW-BTC": "KRW-BTC:2026-03-02T12:00Z:buy"} if pending is None else pending,
        last_event_at=T0 + timedelta(minutes=5),
    )


async def locked_elsewhere(db: Database, run_id: str) -> bool:
    """True when another transaction holds the run's ``risk_state`` row lock."""
    async with db.transaction() as conn:
        try:
            await conn.fetchrow("SELECT 1 FROM risk_state WHERE run_id = $1 FOR UPDATE NOWAIT", run_id)
        except asyncpg.LockNotAvailableError:
            return True
    return False


async def test_the_first_load_of_a_run_creates_its_row_and_a_later_one_reads_it_back(
    migrated_db: Database,
) -> None:
    run_id = new_run_id("state")
    async with migrated_db.transaction() as conn:
        fresh = await state.load_risk_state(conn, run_id, T0, YAML)
    assert fresh == CoreState(DailyState(DAY))

    saved = a_state()
    async with migrated_db.transaction() as conn:
        await state.save_risk_state(conn, run_id, saved, T0)
    async with migrated_db.transaction() as conn:
        assert await state.load_risk_state(conn, run_id, T0, YAML) == saved

    async with migrated_db.session() as s:  # what readers through the ORM see
        row = (await s.execute(select(RiskState).where(RiskState.run_id == run_id))).scalar_one()
        daily = (await s.execute(select(DailyRiskState).where(DailyRiskState.run_id == run_id))).scalar_one()
    assert row.pending_orders == {"KRW-BTC": "KRW-BTC:2026-03-02T12:00Z:buy"}
    assert (row.consecutive_losses, row.cooldown_until, row.last_event_at) == (
        2,
        saved.cooldown_until,
        saved.last_event_at,
    )
    assert (daily.date, daily.total_pnl, daily.buy_count, daily.sell_count, daily.trade_count) == (
        DAY,
        Decimal("-1234.50000001"),
        3,
        1,
        4,
    )
    assert daily.is_trading_halted and daily.consecutive_losses == 2
    assert daily.cooldown_until == saved.cooldown_until


async def test_the_create_statement_makes_the_row_and_locks_it_in_one_round_trip(
    migrated_db: Database,
) -> None:
    run_id = new_run_id("state")
    async with migrated_db.transaction() as conn:
        row = await conn.fetchrow(state._CREATE_STATE, run_id)
        assert (row["consecutive_losses"], row["pending_orders"]) == (0, "{}")
    async with migrated_db.transaction() as conn:
        await state.save_risk_state(conn, run_id, a_state(), T0)

    # On a row that exists (another replica created it first) it changes nothing and locks it.
    async with migrated_db.transaction() as conn:
        row = await conn.fetchrow(state._CREATE_STATE, run_id)
        assert row["consecutive_losses"] == 2
        assert await locked_elsewhere(migrated_db, run_id)
        again = await state.load_risk_state(conn, run_id, T0, YAML)
    assert again == a_state()
    assert not await locked_elsewhere(migrated_db, run_id)


@pytest.mark.parametrize("existing", [True, False], ids=["existing-row", "first-use"])
async def test_two_units_of_work_on_a_run_serialise_and_the_second_sees_the_first(
    migrated_db: Database, existing: bool
) -> None:
    """The second load waits for the first transaction's commit, then reads what it saved,
    including a daily row of a new trading day the first one created."""
    run_id = new_run_id("state")
    if existing:
        async with migrated_db.transaction() as conn:
            await state.save_risk_state(conn, run_id, a_state(losses=1, pending={}), T0)
    next_day = T0 + timedelta(days=1)
    first_loaded, first_saving = asyncio.Event(), asyncio.Event()
    seen: list[CoreState] = []

    async def first() -> None:
        async with migrated_db.transaction() as conn:
            await state.load_risk_state(conn, run_id, next_day, YAML)
            first_loaded.set()
            await asyncio.sleep(0.3)  # the second is waiting on the row meanwhile
            first_saving.set()
            await state.save_risk_state(conn, run_id, a_state(next_day.date(), losses=7), T0)

    async def second() -> None:
        await first_loaded.wait()
        async with migrated_db.transaction() as conn:
            seen.append(await state.load_risk_state(conn, run_id, next_day, YAML))
            assert first_saving.is_set()

    await asyncio.wait_for(asyncio.gather(first(), second()), timeout=10)
    assert seen == [a_state(next_day.date(), losses=7)]


async def test_audits_are_written_in_order_once_each(migrated_db: Database) -> None:
    run_id = new_run_id("state")

    def audit(kind: str, order: str, minute: int) -> AuditEntry:
        return AuditEntry(kind, f"{kind} of {order}", "KRW-BTC", order, T0 + timedelta(minutes=minute))

    async with migrated_db.transaction() as conn:
        await state.write_audits(conn, run_id, ())
        await state.write_audits(conn, run_id, (audit("MAX_DAILY_LOSS", "a", 1), audit("DAILY_HALT", "a", 1)))
    async with migrated_db.transaction() as conn:  # a redelivery, plus one new
        await state.write_audits(conn, run_id, (audit("MAX_DAILY_LOSS", "a", 1), audit("COOLDOWN", "b", 2)))

    async with migrated_db.session() as s:
        rows = (
            await s.execute(select(RiskAudit).where(RiskAudit.run_id == run_id).order_by(RiskAudit.id))
        ).scalars()
        got = [(r.violation_type, r.description, r.symbol, r.order_id, r.ts_event) for r in rows]
    assert got == [
        ("MAX_DAILY_LOSS", "MAX_DAILY_LOSS of a", "KRW-BTC", "a", T0 + timedelta(minutes=1)),
        ("DAILY_HALT", "DAILY_HALT of a", "KRW-BTC", "a", T0 + timedelta(minutes=1)),
        ("COOLDOWN", "COOLDOWN of b", "KRW-BTC", "b", T0 + timedelta(minutes=2)),
    ]


async def test_the_ledger_read_is_the_balance_and_the_positions_of_the_currency(
    migrated_db: Database,
) -> None:
    run_id = new_run_id("state")
    async with migrated_db.transaction() as conn:
        empty = await state.read_ledger(conn, run_id, "KRW")
        assert empty == state.LedgerRows(None, [], {})
        assert empty.ledger({}, None, Decimal(10_000_000)).balance == Decimal(10_000_000)

        await conn.execute(
            "INSERT INTO account_state (run_id, currency, balance, initial_balance) VALUES"
            " ($1, 'KRW', 1500.5, 2000), ($1, 'USDT', 7, 7)",
            run_id,
        )
        await conn.execute(
            "INSERT INTO positions (run_id, symbol, quantity, avg_price, position_id, currency) VALUES"
            " ($1, 'KRW-BTC', 0.5, 100, 'x', 'KRW'), ($1, 'KRW-ETH', 0, 10, 'y', 'KRW'),"
            " ($1, 'USDT-SOL', 2, 3, 'z', 'USDT')",
            run_id,
        )
        rows = await state.read_ledger(conn, run_id, "KRW")
    assert rows.balance == Decimal("1500.5")
    assert sorted(rows.held_symbols) == ["KRW-BTC", "USDT-SOL"]
    assert rows.positions == {"KRW-BTC": state.Holding(Decimal("0.5"), Decimal(100))}
    ledger = rows.ledger({"KRW-BTC": Decimal(120)}, Decimal(5000), Decimal(10_000_000))
    assert (ledger.balance, ledger.exposure(), ledger.reference_equity) == (
        Decimal("1500.5"),
        Decimal(60),
        Decimal(5000),
    )


# -- Redis: the price SET and the volatility GET of an entry in one round trip -------------------


def failures(purpose: str) -> float:
    return REGISTRY.get_sample_value("coinpilot_risk_cache_failures_total", {"purpose": purpose}) or 0.0


@pytest.mark.redis
async def test_noting_the_price_and_reading_volatility_share_one_round_trip(redis_url: str) -> None:
    run_id = new_run_id("state")
    cache = Cache(redis_url)
    risk = state.RiskCache(cache, retry_seconds=10)
    try:
        assert await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(100), T0) == (
            state.VolatilityReading(None)
        )
        assert await cache.get(keys.price("KRW-BTC", run_id)) == f"100|{T0.isoformat()}"

        fitted = VolatilityState("KRW-BTC", 2.5, True, T0, 2160, 1.5)
        await cache.set(keys.volatility_state("KRW-BTC", run_id), fitted.to_json())
        later = T0 + timedelta(minutes=1)
        reading = await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(101), later)
        assert reading.available and reading.state == fitted
        assert await cache.get(keys.price("KRW-BTC", run_id)) == f"101|{later.isoformat()}"

        # an older price is not written (memory knows a later one); the reading still comes
        reading = await risk.note_price_and_read_volatility(run_id, "KRW-BTC", Decimal(99), T0)
        assert reading.state == fitted
        assert await cache.get(keys.price("KRW-BTC", run_id)) == f"101|{later.isoformat()}"
        assert await risk.prices(run_id, ["KRW-BTC"]) == {"KRW-BTC": Decimal(101)}

        # a failed GET alone counts against the volatility multiplier, as volatility() does
        await cache.client.lpush(keys.volatility_state("KRW-ETH", run_id), "not a string")
        before = failures("volatility multiplier"), failures("price")
        reading = await risk.note_price_and_read_volatility(run_id, "KRW-ETH", Decimal(5), T0)
        assert reading == state.VolatilityReading(None, available=False)
        assert (failures("volatility multiplier"), failures("price")) == (before[0] + 1, before[1])
        assert await cache.get(keys.price("KRW-ETH", run_id)) == f"5|{T0.isoformat()}"
    finally:
        await cache.delete(
            keys.price("KRW-BTC", run_id),
            keys.price("KRW-ETH", run_id),
            keys.volatility_state("KRW-BTC", run_id),
            keys.volatility_state("KRW-ETH", run_id),
        )
        await cache.close()


async def test_with_redis_unreachable_an_unknown_reading_waits_and_counts_the_price_once() -> None:
    """Multiplier 1.0 in place of a state risk never saw could change the size: the signal waits
    (``TransientError``); see test_cache_outage.py for the mirror of what it did see."""
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0")
    risk = state.RiskCache(cache, retry_seconds=60)
    try:
        before = failures("price"), failures("volatility multiplier")
        with pytest.raises(TransientError, match="volatility state of KRW-BTC"):
            await risk.note_price_and_read_volatility("live", "KRW-BTC", Decimal(100), T0)
        assert (failures("price"), failures("volatility multiplier")) == (before[0] + 1, before[1])
        # Redis is skipped for retry_seconds; the price is still remembered in memory
        with pytest.raises(TransientError):
            await risk.note_price_and_read_volatility("live", "KRW-ETH", Decimal(5), T0)
        assert failures("price") == before[0] + 1
        assert await risk.prices("live", ["KRW-BTC", "KRW-ETH"]) == {
            "KRW-BTC": Decimal(100),
            "KRW-ETH": Decimal(5),
        }
    finally:
        await cache.close()
