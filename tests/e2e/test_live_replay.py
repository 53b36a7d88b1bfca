"""A lockstep replay with the executor on the Upbit venue books what paper books (issue 23).

The seven services run as processes (as in ``test_parity``), the executor with
``COINPILOT_EXECUTOR_VENUE=upbit`` against the local fake exchange (``tests/support/fake_upbit.py``,
served from this test's event loop on 127.0.0.1) through the real client, signed requests and all.
The window is ``test_outages``'s six hours (two round trips, BTC and ETH), published as the KRW
markets the live venue trades (``KRW-BTC``, ``KRW-ETH``: the sample is USDT data, the prices are
kept as they are).

Paper and the fake are made to agree where fills are full: no slippage, the fake's fee is the paper
fee, and each market's book is one deep level (asks and bids) at the recorded close of the minute
being replayed, the price the paper venue quotes. The book follows the replay with certainty, not
by a race: lockstep publishes a minute's candles only after every consumer drained the previous
minute (the order decided on a candle is filled before the next candle goes out), and the replay's
``progress`` hook, which runs after a minute is drained and before the next is published, moves
the book to the next minute's closes. Then:

* the ledger is the backtest's, fill for fill, to the last decimal; each order was quoted first
  (``GET /v1/orderbook``, the venue's price band): the book at the decision minute's close is the
  order's reference price, so its walk is in the band and nothing is refused ``PRICE_OUT_OF_BAND``;
* each fill is one order on the exchange (its identifier the venue's), and its trades are the
  fill: the volume, the funds (to the ledger's 8 decimals, rounded against the account), the fee;
* the exchange's balances are the ledger's: every coin exactly; KRW up to the amounts' rounding
  to the ledger's 8 decimals (the prices have cents, so the funds have 10), which this test
  computes from the exchange's trades to the unit (``rounding_of``); reconciliation, at start-up
  and after the replay, finds no discrepancy and sets no halt;
* nothing was dead-lettered, and no key or JWT the fake received is in any service's log.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from itertools import groupby, pairwise
from pathlib import Path

import httpx
import nats
import pytest

from apps.demo import sample_files, start_service, start_services, stop_services, wait_ready
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Fill, MinuteCandle, Side
from coinpilot.db import Database
from coinpilot.db.halts import active_halt
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.service_names import SERVICES
from services.executor import reconcile
from services.executor.core import DEFAULT_INITIAL_BALANCE, UPBIT_KRW_FEE_RATE
from services.executor.live.states import identifier_for
from services.executor.upbit import Credentials, UpbitClient
from tests.e2e.test_outages import split_window
from tests.e2e.test_parity import canonical, distributed_ledger
from tests.support.e2e_run import prepare_run
from tests.support.fake_upbit import FakeOrder, FakeUpbit

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

EIGHT_DP = Decimal("0.00000001")
DEPTH = Decimal(1_000_000)
"""Units at the close on each side of each book: every order of the window fills in full."""
MIN_TOTAL = Decimal(5000)
"""The fake's minimum order total per market, Upbit KRW's (orders here are ~1.8 M)."""
AS_KRW = {"USDT-BTC": "KRW-BTC", "USDT-ETH": "KRW-ETH"}


class BookFollower:
    """Keeps each market's book at the close of the minute being replayed."""

    def __init__(self, fake: FakeUpbit, replay: Sequence[MinuteCandle]) -> None:
        self.fake = fake
        minutes = [list(group) for _, group in groupby(replay, key=lambda c: c.ts_open)]
        self.first = minutes[0]
        # progress(done, total) is called after the minute whose candles bring ``done`` to a count
        self.after: dict[int, list[MinuteCandle]] = {}
        done = 0
        for current, following in pairwise(minutes):
            done += len(current)
            self.after[done] = following
        self.moves = 0

    def set(self, candles: Sequence[MinuteCandle]) -> None:
        for candle in candles:
            level = [(candle.close, DEPTH)]
            self.fake.set_book(candle.symbol, asks=level, bids=level)
        self.moves += 1

    def progress(self, done: int, total: int) -> None:
        """Runs after a minute drained, before the next one is published (lockstep)."""
        following = self.after.get(done)
        if following is not None:
            self.set(following)


def live_env(fake: FakeUpbit, run_id: str) -> dict[str, str]:
    return {
        "COINPILOT_RUN_ID": run_id,  # the run the executor reconciles
        "COINPILOT_EXECUTOR_VENUE": "upbit",
        "COINPILOT_LIVE_TRADING": "true",
        "COINPILOT_UPBIT_ACCESS_KEY": fake.access_key,
        "COINPILOT_UPBIT_SECRET_KEY": fake.secret_key,
        "COINPILOT_UPBIT_BASE_URL": fake.url,
        "COINPILOT_EXECUTOR_MAX_ORDER_KRW": "10000000",
        "COINPILOT_EXECUTOR_MAX_DAILY_KRW": "1000000000000000",  # the day counts every run's BUYs
        "COINPILOT_EXECUTOR_POLL_INTERVAL_SECONDS": "0.05",
    }


def rounding_of(order: FakeOrder) -> Decimal:
    """What the ledger leaves on the exchange for one order: it books the funds rounded to 8 dp
    against the account (a BUY's up, a SELL's down); the fake settles them exact."""
    if order.side == "bid":
        return order.executed_funds.quantize(EIGHT_DP, rounding=ROUND_CEILING) - order.executed_funds
    return order.executed_funds - order.executed_funds.quantize(EIGHT_DP, rounding=ROUND_FLOOR)


def assert_fill_is_the_exchanges(fill: Fill, order: FakeOrder) -> None:
    buy = fill.side is Side.BUY
    rounding = ROUND_CEILING if buy else ROUND_FLOOR
    assert order.side == ("bid" if buy else "ask") and order.market == fill.symbol
    assert order.ord_type == ("price" if buy else "market")
    assert order.trades, order.to_json()
    assert order.executed_volume == fill.quantity
    assert order.executed_funds.quantize(EIGHT_DP, rounding=rounding) == fill.amount
    assert order.paid_fee == sum(t.fee for t in order.trades) == fill.fee
    assert {t.price for t in order.trades} == {fill.fill_price}
    # a market sell sells the whole position; a market buy usually ends cancel, the unspent
    # quote left after the last whole unit released
    assert order.state in (("done", "cancel") if buy else ("done",))


async def test_a_lockstep_replay_on_the_upbit_venue_books_the_backtests_fills(
    nats_url: str, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    warm, replay = split_window(load_candles(sample_files(), rename=AS_KRW))
    markets = sorted({c.symbol for c in replay})
    prepared = await prepare_run("live-replay", warm, replay, nats_url, pg_url)
    run_id, expected, report = prepared.run_id, prepared.expected, prepared.report
    nc, js, dlq_before = prepared.nc, prepared.js, prepared.dlq_before
    assert len(report.trips) >= 2, "the window must trade at least two round trips"

    async with FakeUpbit() as fake:
        for market in markets:
            fake.add_market(
                market,
                tick_size="0.01",
                bid_min_total=MIN_TOTAL,
                ask_min_total=MIN_TOTAL,
                bid_fee=UPBIT_KRW_FEE_RATE,  # = the paper fee (ExecutorSettings' default)
                ask_fee=UPBIT_KRW_FEE_RATE,
            )
        # the ledger opens the run's KRW account with INITIAL_BALANCE: live, the account's KRW
        fake.set_balance("KRW", DEFAULT_INITIAL_BALANCE)
        book = BookFollower(fake, replay)
        book.set(book.first)

        stack = EmbeddedStack(tmp_path, nats_url=nats_url, database_url=pg_url, redis_url=redis_url)
        services = start_services(stack, tmp_path, names=[n for n in SERVICES if n != "executor"])
        services.append(start_service("executor", stack, tmp_path, extra_env=live_env(fake, run_id)))
        try:
            await wait_ready(services)
            await replay_candles(
                js, replay, run_id=run_id, pace=parse_pace("lockstep"), drain_timeout=60,
                progress=book.progress,
            )  # fmt: skip
        finally:
            stop_services(services)
            await nc.close()

        assert book.moves == len(book.after) + 1
        booked = await distributed_ledger(pg_url, run_id)
        assert [canonical(f) for f in booked] == [canonical(f) for f in expected]

        # each fill is one order on the exchange, and the exchange's trades are the fill
        placed = [o for o in fake.orders if o.identifier is not None]
        assert len(placed) == len(fake.orders) == len(booked)
        assert fake.count("GET", "/v1/orderbook") == len(booked)  # the band was checked, each order once
        by_identifier = {o.identifier: o for o in placed}
        for fill in booked:
            assert_fill_is_the_exchanges(fill, by_identifier[identifier_for(run_id, fill.order_id)])
        assert sorted(t.uuid for t in fake.trades) == sorted(t.uuid for o in placed for t in o.trades)

        await the_exchange_holds_what_the_ledger_holds(pg_url, fake, run_id, markets)
        no_secret_in_the_logs(tmp_path / "logs", fake)

    nc = await nats.connect(nats_url)
    try:
        assert (await nc.jetstream().stream_info("DLQ")).state.messages == dlq_before
    finally:
        await nc.close()


async def the_exchange_holds_what_the_ledger_holds(
    pg_url: str, fake: FakeUpbit, run_id: str, markets: Sequence[str]
) -> None:
    """Balances, then reconciliation as the executor runs it (its start-up round, and one now)."""
    db = Database(pg_url)
    settings = reconcile.ReconcileSettings()  # KRW: a difference up to 1 KRW is dust
    client = UpbitClient(
        Credentials.of(fake.access_key, fake.secret_key), base_url=fake.url, timeout=httpx.Timeout(5.0)
    )
    try:
        ledger = await reconcile.read_ledger_view(db, run_id)
        for market in markets:
            coin = fake.holding(coin_of(market))
            assert coin.locked == 0 and coin.balance == ledger.coins.get(coin_of(market), Decimal(0))
        cash = fake.holding("KRW")
        assert cash.locked == 0 and cash.balance != DEFAULT_INITIAL_BALANCE
        left_on_the_exchange = sum(rounding_of(o) for o in fake.orders)
        assert cash.balance - ledger.cash["KRW"] == left_on_the_exchange
        assert 0 < left_on_the_exchange < EIGHT_DP * len(fake.orders)

        async with db.transaction() as conn:
            startup = await conn.fetch(
                "SELECT ok, discrepancies FROM reconciliations WHERE run_id = $1 ORDER BY id", run_id
            )
        assert [(r["ok"], r["discrepancies"]) for r in startup] == [(True, 0)], "one clean start-up round"
        now = await reconcile.reconcile_once(db, client, None, settings, run_id=run_id)
        assert now.ok and now.open_orders == 0, now.summary()
        assert {line.currency for line in now.lines} >= {"KRW"}
        assert [line.verdict for line in now.lines if line.currency == "KRW"] == [reconcile.Verdict.DUST]
        assert await active_halt(db, run_id) is None
    finally:
        await client.aclose()
        await db.dispose()


def coin_of(market: str) -> str:
    return market.split("-", 1)[1]


def no_secret_in_the_logs(logs: Path, fake: FakeUpbit) -> None:
    secrets = [fake.access_key, fake.secret_key, *fake.tokens_seen]
    assert len(secrets) > 2 + 5, "the executor talked to the exchange"
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a key or JWT in {log.name}"
