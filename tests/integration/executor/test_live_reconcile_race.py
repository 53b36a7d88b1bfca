"""Reconciliation against the live venue: a round is one consistent state, and live is KRW only.

Real PostgreSQL and the local fake of Upbit's exchange (tests/support/fake_upbit.py), the
executor's own handler (``app.execute_order``) for orders, ``reconcile.periodic`` as the service
runs it (``defer`` = the live venue's unsettled orders).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from coinpilot.contracts import AlertType, Fill, OrderApproved, OrderRejected, RejectReason, RiskAlert
from coinpilot.db import Database
from coinpilot.db.halts import active_halt
from coinpilot.errors import ConfigError
from coinpilot.runtime import Runtime
from coinpilot.settings import CommonSettings
from services.executor import reconcile, state
from services.executor.app import build, execute_order
from services.executor.live import store
from services.executor.live.checks import Caps
from services.executor.live.venue import LiveParams, UpbitVenue
from services.executor.upbit import Account, Credentials, Order, RetryPolicy, UpbitClient
from tests.support.fake_upbit import FakeUpbit
from tests.support.provenance import Approvals
from tests.unit.executor.factories import buy_order

pytestmark = pytest.mark.postgres

D = Decimal
BTC = "KRW-BTC"
START = D(10_000_000)
FEE = D("0.0005")
BIG = Caps(per_order=D(10**9), per_day=D(10**12))
SETTINGS = reconcile.ReconcileSettings()

# A backend waiting for a row lock of account_state: an order's booking blocked by reconciliation.
_LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND query LIKE '%FROM account_state%FOR UPDATE%'
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpbit]:
    async with FakeUpbit() as exchange:
        exchange.add_market(BTC, tick_size=1000, bid_fee=FEE, ask_fee=FEE)
        exchange.set_balance("KRW", START)
        yield exchange


def client_of(fake: FakeUpbit, cls: type[UpbitClient] = UpbitClient, **extra: Any) -> UpbitClient:
    return cls(
        Credentials.of(fake.access_key, fake.secret_key),
        base_url=fake.url,
        timeout=httpx.Timeout(5.0, connect=2.0),
        retry=RetryPolicy(max_retries=2, backoff_base_seconds=0.01, backoff_cap_seconds=0.02),
        **extra,
    )


def venue_of(db: Database, client: UpbitClient) -> UpbitVenue:
    params = LiveParams(caps=BIG, poll_interval=0.01, poll_attempts=5, not_found_grace=timedelta(0))
    return UpbitVenue(db, client, params)


class Bus(list[RiskAlert]):
    async def publish(self, msg: RiskAlert, *, run_id: str, trace_id: str | None = None) -> None:
        self.append(msg)


class Race:
    """The interleaving that used to halt entries: reconciliation reads the exchange after an order
    executed there and the ledger before that order is booked.

    Reconciliation's ``accounts`` read waits until the order has executed on the exchange (its
    venue's first ``get_order`` answered), or until the order's booking waits for the account lock
    (a consistent round holds it); the order's venue then holds its answer, and so its booking,
    until the round is over."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.reading = asyncio.Event()
        self.executed = asyncio.Event()
        self.round_over = asyncio.Event()

    async def order_blocked(self) -> bool:
        async with self.db.transaction() as conn:
            return bool(await conn.fetchval(_LOCK_WAITERS))

    async def until_order_moved(self) -> None:
        while not self.executed.is_set() and not await self.order_blocked():
            await asyncio.sleep(0.01)


class HeldReads:
    """Reconciliation's client: the exchange read waits for the race (see ``Race``)."""

    def __init__(self, client: UpbitClient, race: Race) -> None:
        self.client, self.race = client, race

    async def accounts(self) -> tuple[Account, ...]:
        self.race.reading.set()
        await self.race.until_order_moved()
        return await self.client.accounts()

    async def open_orders(self) -> tuple[Order, ...]:
        return await self.client.open_orders()

    async def chance(self, market: str) -> Any:
        return await self.client.chance(market)


class LingeringClient(UpbitClient):
    """The venue's client: its order read answers only once the reconciliation round is over."""

    def __init__(self, *args: Any, race: Race, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.race = race

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        order = await super().get_order(uuid=uuid, identifier=identifier)
        self.race.executed.set()
        await self.race.round_over.wait()
        return order


async def open_krw_account(db: Database, run_id: str) -> None:
    async with db.transaction() as conn:
        await state.lock_account(conn, run_id, "KRW", START)


async def test_an_order_executed_during_a_round_is_no_discrepancy_and_a_real_difference_halts(
    fake: FakeUpbit, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    await open_krw_account(executor_db, run_id)
    race = Race(executor_db)
    plain = client_of(fake)
    lingering = client_of(fake, LingeringClient, race=race)
    venue = venue_of(executor_db, lingering)
    bus = Bus()
    buy = buy_order("100000000", "1000000")
    await approvals.approve(run_id, buy)

    async def in_flight() -> str | None:
        count = await store.unsettled(executor_db, run_id)
        return f"{count} unsettled" if count else None

    async def reconcile_round(client: reconcile.AccountsClient) -> None:
        try:
            await reconcile.periodic(
                executor_db, client, bus, SETTINGS, run_id=run_id, rounds=1, defer=in_flight, symbols=[BTC]
            )
        finally:
            race.round_over.set()

    async def order() -> Fill | OrderRejected:
        await race.reading.wait()  # the round has checked for unsettled orders: none
        return await execute_order(
            executor_db, venue, buy, run_id=run_id, trace_id="t-race", initial_balance=START
        )

    try:
        _, answer = await asyncio.wait_for(
            asyncio.gather(reconcile_round(HeldReads(plain, race)), order()), timeout=60
        )
        assert isinstance(answer, Fill)
        assert fake.holding("BTC").balance == answer.quantity  # it executed on the exchange
        async with executor_db.transaction() as conn:
            rows = await conn.fetch("SELECT ok FROM reconciliations WHERE run_id = $1", run_id)
        assert [r["ok"] for r in rows] == [True]  # the round saw the order booked, not half of it
        assert bus == [] and await active_halt(executor_db, run_id) is None

        fake.set_balance("KRW", fake.holding("KRW").balance - D(50_000))  # money gone elsewhere
        await reconcile_round(plain)
        assert [a.type for a in bus] == [AlertType.RECONCILIATION_MISMATCH]
        assert (await active_halt(executor_db, run_id)) is not None
    finally:
        await plain.aclose()
        await lingering.aclose()


# -- live is the KRW market --------------------------------------------------------------------


async def place(db: Database, client: UpbitClient, order: OrderApproved, run_id: str) -> Fill | OrderRejected:
    return await execute_order(
        db, venue_of(db, client), order, run_id=run_id, trace_id="t", initial_balance=START
    )


async def reconcile_btc_run(db: Database, client: UpbitClient, bus: Bus, run_id: str) -> reconcile.Report:
    return await reconcile.reconcile_once(db, client, bus, SETTINGS, run_id=run_id, symbols=[BTC])


async def test_a_non_krw_market_is_rejected_per_order_and_nothing_reaches_the_exchange(
    fake: FakeUpbit, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    client = client_of(fake)
    try:
        order = buy_order("0.05", "0.01", symbol="BTC-ETH")
        await approvals.approve(run_id, order)
        answer = await execute_order(
            executor_db,
            venue_of(executor_db, client),
            order,
            run_id=run_id,
            trace_id="t",
            initial_balance=START,
        )
        assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.MARKET_NOT_SUPPORTED
        assert "KRW markets only" in answer.message
        assert fake.count("GET", "/v1/orders/chance") == 0 and fake.count("POST", "/v1/orders") == 0
        assert await store.fetch(executor_db, run_id, order.order_id) is None
    finally:
        await client.aclose()


async def test_reconciliation_compares_krw_and_the_coins_the_run_trades_only(
    fake: FakeUpbit, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    """The ledger's BTC cash account (opened by a refused BTC-ETH order) and a coin the run does not
    trade held on the exchange are not the run's; a traded coin's difference still halts."""
    client = client_of(fake)
    try:
        await open_krw_account(executor_db, run_id)
        order = buy_order("0.05", "0.01", symbol="BTC-ETH")
        await approvals.approve(run_id, order)
        await execute_order(
            executor_db,
            venue_of(executor_db, client),
            order,
            run_id=run_id,
            trace_id="t",
            initial_balance=START,
        )
        async with executor_db.transaction() as conn:
            currencies = await conn.fetch("SELECT currency FROM account_state WHERE run_id = $1", run_id)
        assert sorted(r["currency"] for r in currencies) == ["BTC", "KRW"]
        fake.set_balance("XRP", D("123.5"))  # held outside CoinPilot
        bus = Bus()

        report = await reconcile.reconcile_once(
            executor_db, client, bus, SETTINGS, run_id=run_id, symbols=[BTC]
        )
        assert report.ok and [line.currency for line in report.lines] == ["KRW"]
        assert bus == [] and await active_halt(executor_db, run_id) is None

        fake.set_balance("BTC", D("0.5"))  # a ghost position in a coin the run trades
        report = await reconcile.reconcile_once(
            executor_db, client, bus, SETTINGS, run_id=run_id, symbols=[BTC]
        )
        assert [line.currency for line in report.discrepancies] == ["BTC"]
        assert [a.type for a in bus] == [AlertType.RECONCILIATION_MISMATCH]
    finally:
        await client.aclose()


async def test_the_live_executor_refuses_to_start_with_a_non_krw_symbol(
    monkeypatch: pytest.MonkeyPatch, executor_db: Database
) -> None:
    monkeypatch.setenv("COINPILOT_EXECUTOR_VENUE", "upbit")
    monkeypatch.setenv("COINPILOT_LIVE_TRADING", "true")
    monkeypatch.setenv("COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY", "access-key-value-123")
    monkeypatch.setenv("COINPILOT_EXECUTOR_UPBIT_SECRET_KEY", "secret-key-value-456")

    def runtime(symbols: tuple[str, ...]) -> Runtime:
        common = CommonSettings(symbols=symbols)
        return Runtime("executor", common, bus=None, db=executor_db, cache=None, log=logging.getLogger("t"))  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=r"KRW markets only.*BTC-ETH"):
        build(runtime(("KRW-BTC", "BTC-ETH")))
    assert build(runtime(("KRW-BTC", "KRW-ETH"))).name == "executor"
