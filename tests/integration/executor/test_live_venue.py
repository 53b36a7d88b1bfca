"""``UpbitVenue`` on real PostgreSQL against the local fake of Upbit's exchange (tests/support/fake_upbit.py).

Every order goes through the executor's own handler (``app.execute_order``): provenance, the
venue, the ledger rules. The fake's KRW-BTC: tick 1000 KRW, fee 0.05 %, minimum total 5000 KRW.
Before each order the venue walks the fake's book (``GET /v1/orderbook``) against the 2 % band.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, generate_latest

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.bus import headers as h
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    EntrySignal,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderRejected,
    RejectReason,
    RiskAlert,
)
from coinpilot.db import Database
from coinpilot.db.halts import active_halt
from coinpilot.errors import ConfigError, TransientError
from coinpilot.runtime import Runtime
from coinpilot.settings import CommonSettings
from services.executor import reconcile
from services.executor.app import build, execute_order
from services.executor.core import FillParams
from services.executor.live import store
from services.executor.live.checks import Caps
from services.executor.live.states import VenueState, identifier_for
from services.executor.live.venue import (
    LiveParams,
    OutcomePending,
    QuoteUnavailable,
    UpbitVenue,
    VenueHalted,
)
from services.executor.settings import LiveSettings
from services.executor.upbit import Credentials, RetryPolicy, UpbitClient
from services.executor.venue import FillVenue, PaperVenue
from services.risk.core import exit_approval
from services.risk.state import read_ledger
from services.strategy import core as strategy_core
from tests.support.fake_upbit import FakeUpbit
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess, wait_for
from tests.unit.executor.factories import T0, buy_order, sell_order
from tests.unit.strategy.factories import PARAMS, snap

pytestmark = pytest.mark.postgres

D = Decimal
BTC = "KRW-BTC"
START = D(10_000_000)
FEE = D("0.0005")
BIG = Caps(per_order=D(10**9), per_day=D(10**12))  # every row of the session counts toward a day


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpbit]:
    async with FakeUpbit() as exchange:
        exchange.add_market(BTC, tick_size=1000, bid_fee=FEE, ask_fee=FEE)
        exchange.add_market("KRW-ETH", tick_size=1000, bid_fee=FEE, ask_fee=FEE)
        exchange.set_balance("KRW", START)
        yield exchange


class Alerts(list[tuple[RiskAlert, str]]):
    async def __call__(self, alert: RiskAlert, run_id: str) -> None:
        self.append((alert, run_id))


@pytest.fixture
async def make_venue(fake: FakeUpbit, executor_db: Database) -> AsyncIterator[Callable[..., UpbitVenue]]:
    """A new venue (and client) each call: a second one is the executor after a restart."""
    clients: list[UpbitClient] = []

    def make(
        *,
        caps: Caps = BIG,
        timeout: float = 5.0,
        grace: float = 0.0,
        alerts: Alerts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        client = UpbitClient(
            Credentials.of(fake.access_key, fake.secret_key),
            base_url=fake.url,
            timeout=httpx.Timeout(timeout, connect=2.0),
            retry=RetryPolicy(max_retries=2, backoff_base_seconds=0.01, backoff_cap_seconds=0.02),
            transport=transport,
        )
        clients.append(client)
        params = LiveParams(
            caps=caps, poll_interval=0.01, poll_attempts=5, not_found_grace=timedelta(seconds=grace)
        )
        return UpbitVenue(executor_db, client, params, alerts=alerts)

    yield make
    for client in clients:
        await client.aclose()


async def run(
    approvals: Approvals, venue: FillVenue, order: OrderApproved, run_id: str, *, close: Decimal | None = None
) -> Fill | OrderRejected:
    await approvals.approve(run_id, order, close=close)
    return await execute_order(
        approvals.db, venue, order, run_id=run_id, trace_id="trace-live", initial_balance=START
    )


async def ledger_of(db: Database, run_id: str) -> tuple[Decimal, Decimal]:
    """(KRW cash, BTC position quantity) of the run's ledger."""
    async with db.transaction() as conn:
        cash = await conn.fetchval(
            "SELECT balance FROM account_state WHERE run_id = $1 AND currency = 'KRW'", run_id
        )
        held = await conn.fetchval(
            "SELECT quantity FROM positions WHERE run_id = $1 AND symbol = $2", run_id, BTC
        )
    return cash, held if held is not None else D(0)


async def fills_booked(db: Database, run_id: str) -> int:
    async with db.transaction() as conn:
        return await conn.fetchval("SELECT count(*) FROM trading_history WHERE run_id = $1", run_id)


def btc_sell(price: str, quantity: str, buy: OrderApproved) -> OrderApproved:
    return sell_order(
        price, opened_by=buy.order_id, quantity=quantity, avg_price=price, high_water_mark=price
    )


# -- the same fills as paper -------------------------------------------------------------------


async def test_paper_and_upbit_book_the_same_fills_when_the_book_is_the_recorded_close(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database
) -> None:
    paper = PaperVenue(FillParams(fee_rate=FEE))
    upbit = make_venue()
    btc = buy_order("98765000", "1234567")
    eth = buy_order("4321000", "777777", symbol="KRW-ETH", at=T0 + timedelta(minutes=3))
    orders = [
        btc,
        eth,
        btc_sell("99123000", "0.01250004", btc),
        sell_order("4299000", opened_by=eth.order_id, quantity="0.17999930", avg_price="4321000",
                   high_water_mark="4400000", symbol="KRW-ETH", at=T0 + timedelta(hours=6)),
    ]  # fmt: skip
    fake.set_book(BTC, asks=[("98765000", "5")], bids=[("99123000", "5")])
    fake.set_book("KRW-ETH", asks=[("4321000", "50")], bids=[("4299000", "50")])

    answers: dict[str, list[Fill | OrderRejected]] = {}
    for name, venue in (("paper", paper), ("upbit", upbit)):
        answers[name] = [await run(approvals, venue, order, f"parity-{name}") for order in orders]

    assert all(isinstance(a, Fill) for a in answers["upbit"]), answers["upbit"]
    assert [a.to_json() for a in answers["upbit"]] == [a.to_json() for a in answers["paper"]]
    assert [a.quantity for a in answers["upbit"]] == [D("0.01250004"), D("0.17999930")] * 2
    assert await ledger_of(executor_db, "parity-upbit") == await ledger_of(executor_db, "parity-paper")
    # and the ledger is what the exchange holds
    cash, held = await ledger_of(executor_db, "parity-upbit")
    assert (cash, held) == (fake.holding("KRW").balance, fake.holding("BTC").balance) == (cash, D(0))
    assert fake.holding("ETH").balance == 0 and len(fake.orders) == 4


# -- partial fills -----------------------------------------------------------------------------


async def test_a_partial_fill_books_exactly_what_the_exchange_traded(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    venue = make_venue()
    # the quote shows a book that fills the order (a thin one is refused before anything is sent),
    # then the book thins before the order arrives: 1,000,000 KRW meets 0.004 at 100,000,000 and
    # 0.003 at 100,100,000, then nothing
    fake.set_book(BTC, asks=[("100000000", "0.004"), ("100100000", "1")])
    fake.move_book_after_next_quote(BTC, asks=[("100000000", "0.004"), ("100100000", "0.003")])
    buy = buy_order("100000000", "1000000")
    fill = await run(approvals, venue, buy, run_id)

    assert isinstance(fill, Fill)
    traded = fake.trades
    assert fill.quantity == sum((t.volume for t in traded), D(0)) == D("0.007")
    assert fill.amount == sum((t.funds for t in traded), D(0)) == D("700300")
    assert fill.fee == sum((t.fee for t in traded), D(0)) == D("350.15")
    assert (
        await ledger_of(executor_db, run_id)
        == (
            fake.holding("KRW").balance,
            fake.holding("BTC").balance,
        )
        == (D("9299349.85"), D("0.007"))
    )
    row = await store.fetch(executor_db, run_id, buy.order_id)
    assert row is not None
    assert (row.state, row.exchange_state, row.executed_volume, row.funds) == (
        VenueState.DONE, "cancel", D("0.007"), D("700300"),
    )  # fmt: skip
    assert (row.remainder, row.dust, len(row.trades)) == (D("299700"), False, 2)

    # and sold back into a book of two bids: the ledger still equals the exchange to the last decimal
    fake.set_book(BTC, bids=[("99900000", "0.005"), ("99800000", "1")])
    sell = btc_sell("99900000", "0.007", buy)
    sold = await run(approvals, venue, sell, run_id)
    assert isinstance(sold, Fill) and sold.quantity == D("0.007")
    assert await ledger_of(executor_db, run_id) == (fake.holding("KRW").balance, D(0))
    assert fake.holding("BTC").balance == 0


async def test_a_market_buy_leaving_less_than_the_minimum_unspent_records_it_as_dust(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "0.00999"), ("101000000", "1")])
    buy = buy_order("100000000", "1000000")
    fill = await run(approvals, make_venue(), buy, run_id)
    assert isinstance(fill, Fill)
    row = await store.fetch(executor_db, run_id, buy.order_id)
    assert row is not None and row.state is VenueState.DONE
    # 999,000 at 100,000,000, then 0.00000990 at 101,000,000 = 999.9: 0.1 KRW cannot buy another unit
    assert (row.funds, row.remainder, row.dust) == (D("999999.9"), D("0.1"), True)
    assert await ledger_of(executor_db, run_id) == (fake.holding("KRW").balance, fake.holding("BTC").balance)


# -- partial exits and dust --------------------------------------------------------------------


async def test_a_market_sell_that_runs_out_of_book_keeps_the_rest_open_and_the_next_exit_sells_it(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    venue = make_venue()
    fake.set_book(BTC, asks=[("100000000", "1")])
    buy = buy_order("100000000", "1000000")
    assert isinstance(await run(approvals, venue, buy, run_id), Fill)

    # quoted on a book that can take the 0.01 held (the band passes), the sell meets a book another
    # taker thinned meanwhile: 0.006, then nothing, and the exchange ends it `cancel`
    fake.set_book(BTC, bids=[("99900000", "1")])
    fake.move_book_after_next_quote(BTC, bids=[("99900000", "0.006")])
    sold = await run(approvals, venue, btc_sell("99900000", "0.01", buy), run_id)
    assert isinstance(sold, Fill)
    (trade,) = fake.trades[1:]
    assert (sold.quantity, sold.amount, sold.fee) == (trade.volume, trade.funds, trade.fee)
    assert (sold.quantity, sold.position_quantity_after, sold.position_avg_price_after) == (
        D("0.006"), D("0.004"), D("100000000"),
    )  # fmt: skip
    # realized on the part sold: (99,900,000 − 100,000,000) × 0.006 − fee 299.7
    assert (sold.realized_pnl_gross, sold.realized_pnl) == (D("-600"), D("-899.7"))
    assert await ledger_of(executor_db, run_id) == (
        fake.holding("KRW").balance, fake.holding("BTC").balance,
    ) == (D("9598600.3"), D("0.004"))  # fmt: skip
    async with executor_db.transaction() as conn:
        position_id = await conn.fetchval(
            "SELECT position_id FROM positions WHERE run_id = $1 AND symbol = $2", run_id, BTC
        )
    assert position_id == buy.order_id  # the same position, still open
    row = await store.fetch(executor_db, run_id, sold.order_id)
    assert row is not None and (row.exchange_state, row.remainder, row.dust) == ("cancel", D("0.004"), False)

    # the next exit (the next minute) sells the rest, and the position is closed
    fake.set_book(BTC, bids=[("99800000", "1")])
    rest = sell_order(
        "99800000", opened_by=buy.order_id, quantity="0.004", avg_price="100000000",
        high_water_mark="100000000", at=T0 + timedelta(hours=5, minutes=1),
    )  # fmt: skip
    closed = await run(approvals, venue, rest, run_id)
    assert isinstance(closed, Fill) and (closed.quantity, closed.position_quantity_after) == (D("0.004"), 0)
    assert await ledger_of(executor_db, run_id) == (fake.holding("KRW").balance, D(0))
    assert fake.holding("BTC").balance == 0 and await fills_booked(executor_db, run_id) == 3


def exit_order(signal: ExitSignal) -> OrderApproved:
    """The order risk approves for an exit signal (exits always pass)."""
    return exit_approval(signal)


async def test_a_dust_remainder_is_refused_once_then_never_signalled_again_and_entries_resume(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    """The strategy's core decides, this executor books on the fake exchange: a stop-loss exit
    meets a book thinned after its quotation and leaves 0.00004 BTC (~3,600 KRW, under the 5,000
    KRW minimum); the strategy exits the rest on the next candle, the executor refuses it as dust
    without asking the exchange, and no exit is signalled for it again; the ledger holds the dust
    as the exchange does, risk no longer counts it, and the next BUY of BTC takes it over."""
    venue = make_venue()
    fake.set_book(BTC, asks=[("100000000", "1")])
    buy = buy_order("100000000", "1000000")
    bought = await run(approvals, venue, buy, run_id)
    assert isinstance(bought, Fill)
    strategy = strategy_core.on_fill(strategy_core.SymbolState(BTC), bought)

    answers: list[Fill | OrderRejected] = []
    entries: list[EntrySignal] = []
    fake.set_book(BTC, bids=[("90000000", "1")])  # what the quotation sees
    fake.move_book_after_next_quote(BTC, bids=[("90000000", "0.00996")])  # what the sell meets
    start = T0 + timedelta(hours=1)
    for minute in range(30):
        step = strategy_core.on_snapshot(
            strategy, snap(at=start + timedelta(minutes=minute), close="90000000"), PARAMS
        )
        strategy = step.state
        for signal in step.out:
            if isinstance(signal, EntrySignal):
                entries.append(signal)  # the symbol is free again (not traded here)
                continue
            answer = await run(approvals, venue, exit_order(signal), run_id)
            answers.append(answer)
            if isinstance(answer, Fill):
                strategy = strategy_core.on_fill(strategy, answer)
            else:
                strategy = strategy_core.on_rejection(strategy, answer)

    assert [type(a) for a in answers] == [Fill, OrderRejected]  # one exit filled, one refusal, no more
    partial, refused = answers
    assert isinstance(partial, Fill) and isinstance(refused, OrderRejected)
    assert (partial.quantity, partial.position_quantity_after) == (D("0.00996"), D("0.00004"))
    assert refused.reason is RejectReason.BELOW_EXCHANGE_MINIMUM and "dust" in refused.message
    assert fake.count("POST", "/v1/orders") == 2  # the BUY and the one SELL: the dust was never sent
    assert fake.count("GET", "/v1/orderbook") == 2  # nor quoted
    assert strategy.position is None and entries and entries[0].ts_event > refused.ts_event
    row = await store.fetch(executor_db, run_id, partial.order_id)
    assert row is not None and (row.remainder, row.dust) == (D("0.00004"), True)

    # the ledger keeps the dust, as the exchange does; risk sees no open position
    cash, held = await ledger_of(executor_db, run_id)
    assert (cash, held) == (fake.holding("KRW").balance, fake.holding("BTC").balance)
    assert held == D("0.00004")
    async with executor_db.transaction() as conn:
        is_dust = await conn.fetchval(
            "SELECT is_dust FROM positions WHERE run_id = $1 AND symbol = $2", run_id, BTC
        )
        risk_view = await read_ledger(conn, run_id, "KRW")
    assert is_dust is True and (risk_view.held_symbols, risk_view.positions) == ([], {})

    # an entry is possible again: the BUY takes the dust over, and the ledger is still the exchange
    fake.set_book(BTC, asks=[("90000000", "1")])
    again = buy_order("90000000", "900000", at=start + timedelta(hours=1))
    rebought = await run(approvals, venue, again, run_id)
    assert isinstance(rebought, Fill)
    assert (rebought.quantity, rebought.position_quantity_after) == (D("0.01"), D("0.01004"))
    assert await ledger_of(executor_db, run_id) == (fake.holding("KRW").balance, fake.holding("BTC").balance)
    async with executor_db.transaction() as conn:
        position = await conn.fetchrow(
            "SELECT position_id, is_dust FROM positions WHERE run_id = $1 AND symbol = $2", run_id, BTC
        )
    assert position is not None and (position["position_id"], position["is_dust"]) == (again.order_id, False)


# -- answers lost, restarts --------------------------------------------------------------------


async def test_an_order_accepted_then_unanswered_is_looked_up_and_booked_once_after_a_restart(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.accept_then_hang()
    buy = buy_order("100000000", "1000000")
    with pytest.raises(OutcomePending):
        await run(approvals, make_venue(timeout=0.5), buy, run_id)
    row = await store.fetch(executor_db, run_id, buy.order_id)
    assert row is not None and (row.state, row.exchange_uuid) == (VenueState.SUBMITTED, None)
    assert await fills_booked(executor_db, run_id) == 0
    assert await store.unsettled(executor_db, run_id) == 1  # reconciliation waits for it

    restarted = make_venue()
    fill = await run(approvals, restarted, buy, run_id)
    again = await run(approvals, make_venue(), buy, run_id)  # a redelivery: its stored fill

    assert isinstance(fill, Fill) and fill.quantity == D("0.01")
    assert again == fill
    assert len(fake.orders_by_identifier(identifier_for(run_id, buy.order_id))) == 1
    assert fake.count("POST", "/v1/orders") == 1
    assert await fills_booked(executor_db, run_id) == 1
    assert await store.unsettled(executor_db, run_id) == 0
    assert await ledger_of(executor_db, run_id) == (fake.holding("KRW").balance, fake.holding("BTC").balance)


async def test_an_intended_order_the_exchange_never_got_is_rejected_never_sent(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    """A crash after the intended row was committed, before the order left: the redelivery looks it
    up; while a lost order may still be early it waits, then it is rejected, and nothing is sent."""
    buy = buy_order("100000000", "1000000")
    await store.insert_intended(executor_db, store.VenueOrderRow(
        run_id=run_id, order_id=buy.order_id, identifier=identifier_for(run_id, buy.order_id), market=BTC,
        side="bid", ord_type="price", amount=buy.amount, volume=None, min_total=D(5000),
    ))  # fmt: skip
    await store.mark_sent(executor_db, run_id, buy.order_id)

    with pytest.raises(OutcomePending, match="not found on the exchange yet"):
        await run(approvals, make_venue(grace=60), buy, run_id)
    answer = await run(approvals, make_venue(grace=0), buy, run_id)

    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.VENUE_NOT_PLACED
    assert fake.count("POST", "/v1/orders") == 0 and fake.orders == []
    row = await store.fetch(executor_db, run_id, buy.order_id)
    assert row is not None and row.state is VenueState.FAILED


async def test_a_5xx_on_sending_is_looked_up_never_resent(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.fail_next(503, method="POST", path="/v1/orders")
    buy = buy_order("100000000", "1000000")
    venue = make_venue()
    with pytest.raises(OutcomePending):
        await run(approvals, venue, buy, run_id)
    answer = await run(approvals, venue, buy, run_id)  # the ladder's retry in place
    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.VENUE_NOT_PLACED
    assert fake.count("POST", "/v1/orders") == 1 and fake.orders == []


async def test_a_failed_lookup_of_a_sent_order_is_read_again_never_dead_lettered(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.fail_next(400, method="GET", path="/v1/order", name="validation_error")
    buy = buy_order("100000000", "1000000")
    venue = make_venue()
    with pytest.raises(OutcomePending):  # a TransientError: the consumer retries in place
        await run(approvals, venue, buy, run_id)
    fill = await run(approvals, venue, buy, run_id)
    assert isinstance(fill, Fill) and fake.count("POST", "/v1/orders") == 1
    assert await fills_booked(executor_db, run_id) == 1


async def test_a_429_on_sending_is_transient_and_the_retry_places_the_order_once(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.fail_next(429, times=3, method="POST", path="/v1/orders")  # the client tries 3 times
    buy = buy_order("100000000", "1000000")
    venue = make_venue()
    with pytest.raises(TransientError):
        await run(approvals, venue, buy, run_id)
    assert await store.fetch(executor_db, run_id, buy.order_id) is None  # certainly not taken: no row
    fill = await run(approvals, venue, buy, run_id)
    assert isinstance(fill, Fill) and len(fake.orders) == 1


# -- the price band against the book ----------------------------------------------------------


async def test_a_buy_into_asks_out_of_band_is_refused_before_anything_is_sent_or_written(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    # a stale reference price: the book has moved 3 % up since
    fake.set_book(BTC, asks=[("103000000", "1")], bids=[("102900000", "1")])
    buy = buy_order("100000000", "1000000")
    answer = await run(approvals, make_venue(), buy, run_id)

    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.PRICE_OUT_OF_BAND
    assert answer.message.startswith(
        "venue quote 103000000.00000000 is 3.00% away from the reference price 100000000 (band 2.00%): "
        "the average of the KRW-BTC ask book over 1 level(s) for 1000000 KRW"
    )
    assert fake.count("POST", "/v1/orders") == 0 and fake.orders == []
    assert await store.fetch(executor_db, run_id, buy.order_id) is None  # nothing to reconcile
    assert await store.unsettled(executor_db, run_id) == 0
    assert await ledger_of(executor_db, run_id) == (START, D(0))
    # a redelivery is answered from the recorded rejection: the book is not asked again
    again = await run(approvals, make_venue(), buy, run_id)
    assert isinstance(again, OrderRejected) and again.reason is RejectReason.PRICE_OUT_OF_BAND
    assert fake.count("GET", "/v1/orderbook") == 1 and fake.count("POST", "/v1/orders") == 0


async def test_a_sell_into_bids_out_of_band_is_refused_and_the_position_kept(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    venue = make_venue()
    fake.set_book(BTC, asks=[("100000000", "1")])
    buy = buy_order("100000000", "1000000")
    assert isinstance(await run(approvals, venue, buy, run_id), Fill)
    held = await ledger_of(executor_db, run_id)
    # 0.002 at the reference, the rest of the 0.01 only 5 % below: 4 % off on average
    fake.set_book(BTC, bids=[("100000000", "0.002"), ("95000000", "1")])
    sell = btc_sell("100000000", "0.01", buy)
    answer = await run(approvals, venue, sell, run_id)

    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.PRICE_OUT_OF_BAND
    assert "4.00% away" in answer.message and "bid book over 2 level(s) for 0.01 BTC" in answer.message
    assert fake.count("POST", "/v1/orders") == 1  # the BUY only
    assert await store.fetch(executor_db, run_id, sell.order_id) is None
    assert await ledger_of(executor_db, run_id) == held == (fake.holding("KRW").balance, D("0.01"))


async def test_a_book_too_thin_to_fill_the_order_is_refused_before_anything_is_sent(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    # every level shown is at the reference price, but they hold 700,300 KRW of the 1,000,000
    fake.set_book(BTC, asks=[("100000000", "0.004"), ("100100000", "0.003")])
    buy = buy_order("100000000", "1000000")
    answer = await run(approvals, make_venue(), buy, run_id)

    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.PRICE_OUT_OF_BAND
    assert "ask book shows 2 level(s) holding 700300 KRW of the order's 1000000" in answer.message
    assert fake.count("POST", "/v1/orders") == 0 and fake.orders == []
    assert await store.fetch(executor_db, run_id, buy.order_id) is None
    # an empty book cannot fill anything either
    fake.set_book(BTC, asks=[])
    eth = buy_order("100000000", "1000000", at=T0 + timedelta(minutes=1))
    empty = await run(approvals, make_venue(), eth, run_id)
    assert isinstance(empty, OrderRejected) and empty.reason is RejectReason.PRICE_OUT_OF_BAND
    assert "shows 0 level(s)" in empty.message and fake.count("POST", "/v1/orders") == 0


@pytest.mark.parametrize("fault", ["503", "timeout"])
async def test_a_quotation_that_fails_is_transient_and_the_retry_places_one_order(
    fault: str, fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    if fault == "503":
        fake.fail_next(503, method="GET", path="/v1/orderbook")
    else:
        fake.delay_next(2.0, method="GET", path="/v1/orderbook")
    venue = make_venue(timeout=0.5)
    buy = buy_order("100000000", "1000000")
    with pytest.raises(TransientError):  # the consumer retries in place
        await run(approvals, venue, buy, run_id)
    assert fake.count("POST", "/v1/orders") == 0
    assert await store.fetch(executor_db, run_id, buy.order_id) is None
    assert await fills_booked(executor_db, run_id) == 0

    fill = await run(approvals, venue, buy, run_id)
    assert isinstance(fill, Fill) and fill.quantity == D("0.01")
    assert fake.count("POST", "/v1/orders") == 1 and len(fake.orders) == 1


class GarbledBookOnce(httpx.AsyncBaseTransport):
    """The fake exchange, except that the first ``GET /v1/orderbook`` answers 200 with a book
    without its levels (an answer the fake never gives)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.garbled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/orderbook" and not self.garbled:
            self.garbled += 1
            return httpx.Response(200, json=[{"market": BTC, "timestamp": 1}])
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_unreadable_book_is_transient_and_the_order_is_quoted_again_never_dead_lettered(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    transport = GarbledBookOnce()
    venue = make_venue(transport=transport)
    buy = buy_order("100000000", "1000000")
    with pytest.raises(QuoteUnavailable) as unreadable:
        await run(approvals, venue, buy, run_id)
    assert isinstance(unreadable.value, TransientError)  # retried in place, not a PermanentError
    assert transport.garbled == 1 and fake.count("POST", "/v1/orders") == 0
    assert await store.fetch(executor_db, run_id, buy.order_id) is None

    fill = await run(approvals, venue, buy, run_id)
    assert isinstance(fill, Fill) and fake.count("POST", "/v1/orders") == 1


async def test_an_order_refused_off_book_is_published_on_orders_rejected_and_nothing_is_sent(
    executor_nats: NatsProcess, js: JetStreamContext, fake: FakeUpbit, approvals: Approvals,
    executor_db: Database, pg_url: str, run_id: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The executor service (venue upbit) over NATS: the refusal goes out as any rejection does."""
    for stream in ("ORDERS", "FILLS", "DLQ"):
        await js.purge_stream(stream)
    for name, value in {
        "COINPILOT_EXECUTOR_VENUE": "upbit",
        "COINPILOT_LIVE_TRADING": "true",
        "COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY": fake.access_key,
        "COINPILOT_EXECUTOR_UPBIT_SECRET_KEY": fake.secret_key,
        "COINPILOT_EXECUTOR_UPBIT_BASE_URL": fake.url,
        "COINPILOT_EXECUTOR_INITIAL_BALANCE": str(START),
        "COINPILOT_EXECUTOR_MAX_ORDER_KRW": "2000000",
        "COINPILOT_EXECUTOR_MAX_DAILY_KRW": str(10**15),  # every venue order of the session counts
    }.items():
        monkeypatch.setenv(name, value)
    fake.set_book(BTC, asks=[("97000000", "1")])  # an insane (or forged-high) reference: 3 % below
    buy = buy_order("100000000", "1000000")
    await approvals.approve(run_id, buy)
    settings = CommonSettings(
        nats_url=executor_nats.url, database_url=pg_url, redis_url=None, run_id=run_id,
        ack_wait_seconds=1.0, pull_batch_size=1, http_port=0,
    )  # fmt: skip
    host = ServiceHost(["executor"], settings, serve_http=False)
    await host.start()
    try:
        await Bus(js, "test").publish(buy, run_id=run_id)
        answers = await wait_for(lambda: rejections(js, run_id), timeout=30)
    finally:
        await host.stop()

    assert [(a.order_id, a.stage, a.reason) for a in answers] == [
        (buy.order_id, "executor", RejectReason.PRICE_OUT_OF_BAND)
    ]
    assert "3.00% away from the reference price 100000000" in answers[0].message
    assert fake.count("GET", "/v1/orderbook") == 1 and fake.count("POST", "/v1/orders") == 0
    assert await store.fetch(executor_db, run_id, buy.order_id) is None
    assert (await js.stream_info("DLQ")).state.messages == 0
    assert (await js.stream_info("FILLS")).state.messages == 0


async def rejections(js: JetStreamContext, run_id: str) -> list[OrderRejected]:
    info = await js.stream_info("ORDERS")
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("ORDERS", seq)
        if (msg.headers or {}).get(h.RUN_ID) == run_id and msg.subject.startswith("orders.rejected."):
            found.append(OrderRejected.from_json(msg.data))
    return found


# -- refusals, caps, the halt -----------------------------------------------------------------


async def test_an_order_the_exchange_refuses_is_rejected_with_its_name_and_not_retried(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.set_balance("KRW", "500000")  # the exchange holds less than the ledger believes
    buy = buy_order("100000000", "1000000")
    answer = await run(approvals, make_venue(), buy, run_id)
    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.VENUE_REFUSED
    assert "insufficient_funds_bid" in answer.message
    again = await run(approvals, make_venue(), buy, run_id)
    assert isinstance(again, OrderRejected) and again.reason is RejectReason.VENUE_REFUSED
    assert fake.count("POST", "/v1/orders") == 1
    assert await ledger_of(executor_db, run_id) == (START, D(0))


async def test_a_market_the_exchange_does_not_list_is_rejected_before_anything_is_sent(
    fake: FakeUpbit, make_venue, approvals: Approvals, run_id: str
) -> None:
    order = buy_order("500", "100000", symbol="KRW-XRP")
    answer = await run(approvals, make_venue(), order, run_id)
    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.VENUE_REFUSED
    assert "market_does_not_exist" in answer.message and fake.count("POST", "/v1/orders") == 0


async def test_caps_refuse_a_buy_before_anything_is_sent(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    spent = await store.spent_since(executor_db, T0.replace(year=2000))  # what the session's rows spent
    caps = Caps(per_order=D(1_000_000), per_day=spent + D(1_500_000))
    venue = make_venue(caps=caps)

    too_big = buy_order("100000000", "1000001", at=T0 - timedelta(minutes=1))
    over_order = await run(approvals, venue, too_big, run_id)
    first = await run(approvals, venue, buy_order("100000000", "1000000"), run_id)
    eth = buy_order("100000000", "1000000", symbol="KRW-ETH", at=T0 + timedelta(minutes=1))
    over_day = await run(approvals, venue, eth, run_id)

    assert isinstance(over_order, OrderRejected) and over_order.reason is RejectReason.ORDER_CAP_EXCEEDED
    assert isinstance(first, Fill)
    assert isinstance(over_day, OrderRejected) and over_day.reason is RejectReason.DAILY_CAP_EXCEEDED
    assert fake.count("POST", "/v1/orders") == 1


async def test_a_418_halts_the_venue_with_one_critical_alert_and_the_orders_wait(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.fail_next(418, method="POST", path="/v1/orders")
    alerts = Alerts()
    venue = make_venue(alerts=alerts)
    buy = buy_order("100000000", "1000000")
    with pytest.raises(VenueHalted):
        await run(approvals, venue, buy, run_id)
    sent = len(fake.requests)
    eth = buy_order("100000000", "1000000", symbol="KRW-ETH", at=T0 + timedelta(minutes=1))
    for order in (buy, eth):  # every order waits in place (a TransientError), none reaches the exchange
        with pytest.raises(VenueHalted) as halted:
            await run(approvals, venue, order, run_id)
        assert isinstance(halted.value, TransientError)

    assert len(fake.requests) == sent and fake.orders == []
    assert [(a.type, a.level, a.symbol, r) for a, r in alerts] == [
        (AlertType.VENUE_BLOCKED, AlertLevel.CRITICAL, BTC, run_id)
    ]
    assert "418" in alerts[0][0].message
    assert await fills_booked(executor_db, run_id) == 0
    halt = await active_halt(executor_db, run_id)  # risk refuses entries until an operator clears it
    assert halt is not None and halt.source == "venue" and "418" in halt.reason
    # after an operator's restart the blocked order is answered from its row, never sent again
    answer = await run(approvals, make_venue(), buy, run_id)
    assert isinstance(answer, OrderRejected) and answer.reason is RejectReason.VENUE_REFUSED
    assert fake.count("POST", "/v1/orders") == 1


async def test_the_executor_refuses_to_start_live_without_the_switch(
    monkeypatch: pytest.MonkeyPatch, executor_db: Database
) -> None:
    monkeypatch.delenv("COINPILOT_LIVE_TRADING", raising=False)
    monkeypatch.setenv("COINPILOT_EXECUTOR_VENUE", "upbit")
    monkeypatch.setenv("COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY", "access-key-value-123")
    monkeypatch.setenv("COINPILOT_EXECUTOR_UPBIT_SECRET_KEY", "secret-key-value-456")
    rt = Runtime(
        "executor", CommonSettings(), bus=None, db=executor_db, cache=None, log=logging.getLogger("t")
    )  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="COINPILOT_LIVE_TRADING=true"):
        build(rt)
    monkeypatch.setenv("COINPILOT_EXECUTOR_VENUE", "paper")
    assert build(rt).name == "executor"  # paper needs neither


class AlertBus(list[RiskAlert]):
    async def publish(self, msg: RiskAlert, *, run_id: str, trace_id: str | None = None) -> None:
        self.append(msg)


async def test_reconciliation_waits_while_a_live_order_is_not_settled_in_the_ledger(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str
) -> None:
    """An order the exchange executed and the ledger has not booked yet would read as a difference
    (and halt entries): the service's reconciliation skips its round while there is one."""
    fake.set_book(BTC, asks=[("100000000", "1")])
    fake.accept_then_hang()
    buy = buy_order("100000000", "1000000")
    with pytest.raises(OutcomePending):
        await run(approvals, make_venue(timeout=0.5), buy, run_id)
    venue = make_venue()
    bus = AlertBus()

    async def in_flight() -> str | None:
        count = await store.unsettled(executor_db, run_id)
        return f"{count} unsettled" if count else None

    async def reconcile_round() -> None:
        await reconcile.periodic(
            executor_db,
            venue.client,
            bus,
            reconcile.ReconcileSettings(),
            run_id=run_id,
            rounds=1,
            defer=in_flight,
        )

    async def recorded() -> int:
        async with executor_db.transaction() as conn:
            return await conn.fetchval("SELECT count(*) FROM reconciliations WHERE run_id = $1", run_id)

    await reconcile_round()
    assert await recorded() == 0 and bus == [] and await active_halt(executor_db, run_id) is None
    await run(approvals, venue, buy, run_id)  # the redelivery books it
    await reconcile_round()
    assert await recorded() == 1 and bus == []  # the ledger equals the exchange: no alert, no halt
    assert await active_halt(executor_db, run_id) is None


def test_live_trading_is_refused_without_the_switch_and_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "COINPILOT_LIVE_TRADING",
        "COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY",
        "COINPILOT_EXECUTOR_UPBIT_SECRET_KEY",
        "COINPILOT_UPBIT_ACCESS_KEY",
        "COINPILOT_UPBIT_SECRET_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COINPILOT_EXECUTOR_VENUE", "upbit")
    assert LiveSettings().venue == "upbit"
    with pytest.raises(ConfigError, match="COINPILOT_LIVE_TRADING"):
        LiveSettings().require_live()
    monkeypatch.setenv("COINPILOT_LIVE_TRADING", "true")
    monkeypatch.setenv("COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY", "access-key-value-123")
    with pytest.raises(ConfigError, match="SECRET_KEY") as missing:
        LiveSettings().require_live()
    assert "access-key-value-123" not in str(missing.value)
    monkeypatch.setenv("COINPILOT_EXECUTOR_UPBIT_SECRET_KEY", "secret-key-value-456")
    settings = LiveSettings()
    access, secret = settings.require_live()
    assert (access.get_secret_value(), secret.get_secret_value()) == (
        "access-key-value-123",
        "secret-key-value-456",
    )
    shown = f"{settings!r} {settings} {settings.model_dump()}"
    assert "access-key-value-123" not in shown and "secret-key-value-456" not in shown
    monkeypatch.setenv("COINPILOT_LIVE_TRADING", "false")
    with pytest.raises(ConfigError):
        LiveSettings().require_live()
    # the names `coinpilot reconcile` reads serve too
    monkeypatch.setenv("COINPILOT_LIVE_TRADING", "true")
    monkeypatch.delenv("COINPILOT_EXECUTOR_UPBIT_SECRET_KEY")
    monkeypatch.setenv("COINPILOT_UPBIT_SECRET_KEY", "secret-key-value-789")
    assert LiveSettings().require_live()[1].get_secret_value() == "secret-key-value-789"


async def test_no_key_or_token_reaches_logs_messages_metrics_or_the_database(
    fake: FakeUpbit, make_venue, approvals: Approvals, executor_db: Database, run_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    fake.set_book(BTC, asks=[("100000000", "1")], bids=[("99000000", "1")])
    fake.move_book_after_next_quote(BTC, asks=[("100000000", "0.004")])  # a partial fill
    fake.accept_then_hang()
    buy = buy_order("100000000", "1000000")
    with pytest.raises(OutcomePending):
        await run(approvals, make_venue(timeout=0.5), buy, run_id)
    messages = [await run(approvals, make_venue(), buy, run_id)]
    messages.append(await run(approvals, make_venue(), btc_sell("99000000", "0.004", buy), run_id))
    fake.fail_next(418)
    eth = buy_order("100000000", "1000000", symbol="KRW-ETH", at=T0 + timedelta(minutes=1))
    alerts = Alerts()
    with pytest.raises(VenueHalted):
        await run(approvals, make_venue(alerts=alerts), eth, run_id)

    async with executor_db.transaction() as conn:
        rows = [
            str(dict(r))
            for table in ("venue_orders", "trading_history", "account_state", "positions")
            for r in await conn.fetch(f"SELECT * FROM {table}")
        ]
    tokens = fake.tokens_seen
    assert len(tokens) >= 6
    secrets = (fake.access_key, fake.secret_key, *tokens, *(t.split(".")[1] for t in tokens))
    haystacks = {
        "logs": caplog.text,
        "messages": " ".join(m.to_json().decode() for m in messages)
        + " ".join(a.to_json().decode() for a, _ in alerts),
        "metrics": generate_latest(REGISTRY).decode(),
        "database": " ".join(rows),
    }
    assert "venue order" in caplog.text and alerts  # the logs and alerts were written
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a key or token in the {where}"
