"""The real ``UpbitClient`` against the local fake of Upbit's exchange API (tests/support/fake_upbit.py).

Book used by most tests (KRW-BTC, tick 1000 KRW, fee 0.05 %, minimum total 5000 KRW):

    asks  100,100,000 x 0.02      bids   99,900,000 x 0.01
          100,000,000 x 0.01             99,800,000 x 0.05
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import jwt
import pytest

from coinpilot.errors import PermanentError, TransientError
from services.executor.upbit import (
    Blocked,
    Credentials,
    DuplicateIdentifier,
    ExchangeUnavailable,
    OffTickPrice,
    OrderNotFound,
    OrderRefused,
    OrderState,
    OrdType,
    OutcomeUnknown,
    RateLimited,
    RateLimiter,
    RequestRefused,
    RetryPolicy,
    Side,
    TimeInForce,
    Unauthorized,
    UpbitClient,
)
from services.executor.upbit.auth import encode_params, query_hash
from services.executor.upbit.orders import Outcome, booking_of
from tests.support.fake_upbit import FakeUpbit
from tests.support.servers import free_port

D = Decimal
FEE = D("0.0005")
BTC = "KRW-BTC"


class RecordedSleeps:
    """A clock that moves only when the client sleeps, so backoffs cost no wall-clock time."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpbit]:
    async with FakeUpbit() as exchange:
        exchange.add_market(BTC, tick_size=1000)
        exchange.set_balance("KRW", "10000000")
        exchange.set_balance("BTC", "0.5", avg_buy_price="95000000")
        exchange.set_book(
            BTC,
            asks=[("100000000", "0.01"), ("100100000", "0.02")],
            bids=[("99900000", "0.01"), ("99800000", "0.05")],
        )
        yield exchange


def _client(fake: FakeUpbit, **kwargs: object) -> UpbitClient:
    options: dict[str, object] = {
        "base_url": fake.url,
        "timeout": httpx.Timeout(10.0, connect=5.0),
        "retry": RetryPolicy(max_retries=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.05),
    }
    options.update(kwargs)
    return UpbitClient(Credentials.of(fake.access_key, fake.secret_key), **options)  # type: ignore[arg-type]


@pytest.fixture
async def upbit(fake: FakeUpbit) -> AsyncIterator[UpbitClient]:
    async with _client(fake) as client:
        yield client


# -- authentication ------------------------------------------------------------------------------


async def test_signed_requests_with_and_without_parameters_are_accepted(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    accounts = {a.currency: a for a in await upbit.accounts()}
    chance = await upbit.chance(BTC)
    assert await upbit.open_orders(BTC) == ()  # states[]=wait&states[]=watch, hashed unescaped
    assert accounts["KRW"].balance == D(10_000_000) and accounts["BTC"].avg_buy_price == D(95_000_000)
    assert (chance.bid_fee, chance.bid_min_total, chance.ask_min_total) == (FEE, D(5000), D(5000))
    assert chance.ask_account.balance == D("0.5")
    assert [r.status for r in fake.requests] == [200, 200, 200]
    assert len({r.nonce for r in fake.requests}) == 3


async def _raw_get(
    fake: FakeUpbit, params: dict[str, str], claims: dict[str, str], secret: str
) -> httpx.Response:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        token = jwt.encode(claims, secret, algorithm="HS512")
    async with httpx.AsyncClient(base_url=fake.url) as http:
        return await http.get(
            "/v1/orders/chance", params=params, headers={"Authorization": f"Bearer {token}"}
        )


async def test_a_query_hash_of_other_parameters_is_refused(fake: FakeUpbit) -> None:
    claims = {
        "access_key": fake.access_key,
        "nonce": "nonce-tampered",
        "query_hash": query_hash(encode_params({"market": "KRW-ETH"})),
        "query_hash_alg": "SHA512",
    }
    response = await _raw_get(fake, {"market": BTC}, claims, fake.secret_key)
    assert response.status_code == 401
    assert response.json()["error"]["name"] == "invalid_query_payload"


async def test_a_reused_nonce_is_refused(fake: FakeUpbit) -> None:
    claims = {
        "access_key": fake.access_key,
        "nonce": "nonce-once",
        "query_hash": query_hash([("market", BTC)]),
        "query_hash_alg": "SHA512",
    }
    first = await _raw_get(fake, {"market": BTC}, claims, fake.secret_key)
    again = await _raw_get(fake, {"market": BTC}, claims, fake.secret_key)
    assert first.status_code == 200
    assert (again.status_code, again.json()["error"]["name"]) == (401, "nonce_used")


async def test_a_token_signed_with_another_secret_is_unauthorized(fake: FakeUpbit) -> None:
    wrong = UpbitClient(
        Credentials.of(fake.access_key, "not-the-secret-key-000000000000000000000"), base_url=fake.url
    )
    async with wrong:
        with pytest.raises(Unauthorized) as caught:
            await wrong.accounts()
    assert (caught.value.status, caught.value.name) == (401, "jwt_verification")
    assert isinstance(caught.value, PermanentError)


# -- order types -----------------------------------------------------------------------------------


async def test_market_buy_by_krw_amount_walks_the_book(fake: FakeUpbit, upbit: UpbitClient) -> None:
    placed = await upbit.buy_market(BTC, D(1_500_000), identifier="BTC:buy:1")
    order = await upbit.get_order(identifier="BTC:buy:1")
    # 0.01 at 100,000,000 (1,000,000 KRW), then 500,000 KRW at 100,100,000 -> 0.004995 (499,999.5 KRW);
    # the 0.5 KRW left cannot buy 1e-8 BTC, so Upbit ends the order "cancel" with what executed.
    assert placed.uuid == order.uuid and placed.ord_type is OrdType.PRICE and placed.volume is None
    assert order.state is OrderState.CANCEL
    assert [(t.price, t.volume) for t in order.trades] == [
        (D(100_000_000), D("0.01")),
        (D(100_100_000), D("0.004995")),
    ]
    assert order.executed_volume == D("0.014995") and order.executed_funds == D("1499999.5")
    assert order.paid_fee == D("500") + D("249.99975")
    assert fake.holding("KRW").balance == D(10_000_000) - D("1499999.5") - order.paid_fee
    assert fake.holding("KRW").locked == 0
    assert fake.holding("BTC").balance == D("0.5") + D("0.014995")


async def test_market_buy_that_exhausts_the_book_ends_cancel_with_its_executed_volume(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    await upbit.buy_market(BTC, D(5_000_000), identifier="BTC:buy:big")
    order = await upbit.get_order(identifier="BTC:buy:big")
    book_funds = D(1_000_000) + D(2_002_000)
    assert order.state is OrderState.CANCEL and order.executed_volume == D("0.03")
    assert order.executed_funds == book_funds and order.locked == 0
    assert fake.holding("KRW").balance == D(10_000_000) - book_funds - order.paid_fee
    assert fake.holding("KRW").locked == 0


async def test_market_sell_by_volume(fake: FakeUpbit, upbit: UpbitClient) -> None:
    await upbit.sell_market(BTC, D("0.03"), identifier="BTC:sell:1")
    order = await upbit.get_order(identifier="BTC:sell:1")
    funds = D(999_000) + D(1_996_000)  # 0.01 at 99,900,000 + 0.02 at 99,800,000
    assert order.state is OrderState.DONE and order.side is Side.ASK and order.price is None
    assert order.executed_volume == D("0.03") and order.executed_funds == funds
    assert order.paid_fee == funds * FEE
    assert fake.holding("KRW").balance == D(10_000_000) + funds - order.paid_fee
    assert (fake.holding("BTC").balance, fake.holding("BTC").locked) == (D("0.47"), 0)


async def test_limit_buy_fills_in_part_rests_then_fills_when_the_book_crosses(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    placed = await upbit.place_limit(BTC, Side.BID, D(100_000_000), D("0.02"), identifier="BTC:limit:1")
    resting = await upbit.open_orders(BTC)
    assert placed.state is OrderState.WAIT and placed.executed_volume == D("0.01")
    assert [(o.identifier, o.executed_volume, o.remaining_volume) for o in resting] == [
        ("BTC:limit:1", D("0.01"), D("0.01"))
    ]
    reserved_rest = D(1_000_000) * (1 + FEE)
    assert fake.holding("KRW").locked == reserved_rest

    fake.set_book(BTC, asks=[("99000000", "0.05")])  # crosses the resting bid: it fills at its own price
    order = await upbit.get_order(uuid=placed.uuid)
    closed = await upbit.closed_orders(BTC)
    assert order.state is OrderState.DONE and order.executed_volume == D("0.02")
    assert [t.price for t in order.trades] == [D(100_000_000), D(100_000_000)]
    assert [o.uuid for o in closed] == [placed.uuid] and await upbit.open_orders(BTC) == ()
    assert fake.holding("KRW").balance == D(10_000_000) - D(2_000_000) - order.paid_fee
    assert fake.holding("KRW").locked == 0


async def test_cancel_of_a_partly_filled_limit_keeps_what_executed(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    await upbit.place_limit(BTC, Side.ASK, D(99_900_000), D("0.02"), identifier="BTC:limit:ask")
    answer = await upbit.cancel_order(identifier="BTC:limit:ask")
    order = await upbit.get_order(identifier="BTC:limit:ask")
    assert answer.state is OrderState.WAIT  # Upbit answers the order as it stood when asked
    assert order.state is OrderState.CANCEL and order.executed_volume == D("0.01")
    assert (fake.holding("BTC").balance, fake.holding("BTC").locked) == (D("0.49"), 0)
    with pytest.raises(OrderNotFound):
        await upbit.cancel_order(identifier="BTC:limit:ask")


async def test_limit_ioc_cancels_what_it_cannot_fill_at_once(fake: FakeUpbit, upbit: UpbitClient) -> None:
    await upbit.place_limit(
        BTC, Side.BID, D(100_000_000), D("0.02"), identifier="BTC:ioc", time_in_force=TimeInForce.IOC
    )
    order = await upbit.get_order(identifier="BTC:ioc")
    assert order.state is OrderState.CANCEL and order.executed_volume == D("0.01")
    assert fake.holding("KRW").locked == 0


async def test_bookings_of_the_answers_add_up_to_the_exchanges_balances_exactly(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    chance = await upbit.chance(BTC)
    await upbit.buy_market(BTC, D(1_500_000), identifier="L1")  # ends cancel, 0.5 KRW unspent
    await upbit.place_limit(BTC, Side.ASK, D(99_900_000), D("0.02"), identifier="L2")  # half fills
    await upbit.cancel_order(identifier="L2")
    await upbit.place_limit(BTC, Side.BID, D(100_100_000), D("0.03"), identifier="L3")  # half fills, rests
    fake.set_book(BTC, asks=[("100000000", "1")])  # the resting half fills at its limit price
    await upbit.sell_market(BTC, D("0.05"), identifier="L4")
    orders = [await upbit.get_order(identifier=i) for i in ("L1", "L2", "L3", "L4")]
    bookings = [
        booking_of(o, chance.ask_min_total if o.side is Side.ASK else chance.bid_min_total) for o in orders
    ]

    assert [b.outcome for b in bookings] == [
        Outcome.FILLED,
        Outcome.PARTIALLY_CANCELLED,
        Outcome.FILLED,
        Outcome.FILLED,
    ]
    assert fake.holding("KRW").balance == D(10_000_000) + sum(b.cash_delta for b in bookings)
    assert fake.holding("BTC").balance == D("0.5") + sum(b.volume_delta for b in bookings)
    assert fake.holding("KRW").locked == 0 and fake.holding("BTC").locked == 0
    assert sum(len(b.trade_uuids) for b in bookings) == len(fake.trades)
    assert sum(b.fee for b in bookings) == sum(t.fee for t in fake.trades)


# -- refusals --------------------------------------------------------------------------------------


async def test_a_duplicate_identifier_is_refused_so_a_retry_never_doubles_an_order(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    await upbit.buy_market(BTC, D(10_000), identifier="BTC:once")
    with pytest.raises(DuplicateIdentifier) as caught:
        await upbit.buy_market(BTC, D(10_000), identifier="BTC:once")
    assert caught.value.status == 400 and isinstance(caught.value, PermanentError)
    assert len(fake.orders_by_identifier("BTC:once")) == 1


async def test_an_identifier_is_burnt_even_by_a_refused_order(fake: FakeUpbit, upbit: UpbitClient) -> None:
    with pytest.raises(OrderRefused) as first:
        await upbit.buy_market(BTC, D(100_000_000), identifier="BTC:poor")
    with pytest.raises(DuplicateIdentifier):
        await upbit.buy_market(BTC, D(10_000), identifier="BTC:poor")
    assert first.value.name == "insufficient_funds_bid" and fake.orders_by_identifier("BTC:poor") == []


async def test_an_off_tick_limit_price_is_refused_locally_before_sending(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    with pytest.raises(OffTickPrice) as caught:
        await upbit.place_limit(BTC, Side.BID, D(100_000_500), D("0.01"), identifier="BTC:offtick")
    assert caught.value.status is None and caught.value.name == "invalid_price_bid"
    assert fake.count("GET", "/v1/orderbook/instruments") == 1  # the tick came from the exchange
    assert fake.count("POST", "/v1/orders") == 0


async def test_an_off_tick_limit_price_is_refused_by_the_exchange_too(upbit: UpbitClient) -> None:
    with pytest.raises(OffTickPrice) as caught:
        await upbit.place_order(
            market=BTC, side=Side.ASK, ord_type=OrdType.LIMIT, price=D(100_000_500), volume=D("0.01"),
            identifier="BTC:offtick:sent",
        )  # fmt: skip
    assert (caught.value.status, caught.value.name) == (400, "invalid_price_ask")


async def test_an_order_below_the_minimum_total_is_refused(upbit: UpbitClient) -> None:
    with pytest.raises(OrderRefused) as caught:
        await upbit.buy_market(BTC, D(4_999), identifier="BTC:tiny")
    assert (caught.value.status, caught.value.name) == (400, "under_min_total_bid")


async def test_looking_up_an_order_never_placed_is_order_not_found(upbit: UpbitClient) -> None:
    with pytest.raises(OrderNotFound):
        await upbit.get_order(identifier="never-sent")


# -- failures --------------------------------------------------------------------------------------


async def test_429_is_retried_with_backoff_then_succeeds(fake: FakeUpbit) -> None:
    time = RecordedSleeps()
    fake.fail_next(429, times=2, path="/v1/accounts")
    async with _client(fake, limiter=RateLimiter(clock=time.clock, sleep=time.sleep)) as upbit:
        accounts = await upbit.accounts()
    assert {a.currency for a in accounts} == {"KRW", "BTC"}
    assert [r.status for r in fake.requests] == [429, 429, 200]
    # Each 429 said sec=0 (wait out the second) and each retry backed off: 0.01, then 0.02.
    assert 0.01 in time.sleeps and 0.02 in time.sleeps


async def test_429_that_persists_is_raised_as_transient(fake: FakeUpbit) -> None:
    time = RecordedSleeps()
    fake.fail_next(429, times=None, path="/v1/accounts")
    async with _client(fake, limiter=RateLimiter(clock=time.clock, sleep=time.sleep)) as upbit:
        with pytest.raises(RateLimited) as caught:
            await upbit.accounts()
    assert isinstance(caught.value, TransientError)
    assert fake.count("GET", "/v1/accounts") == 4  # the first try and three retries, then it gives up


# -- the order book --------------------------------------------------------------------------------


async def test_the_orderbook_is_the_exchanges_book_best_first_public_and_in_its_own_group(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    book = await upbit.orderbook(BTC)
    assert [(lv.price, lv.size) for lv in book.asks] == [
        (D(100_000_000), D("0.01")),
        (D(100_100_000), D("0.02")),
    ]
    assert [(lv.price, lv.size) for lv in book.bids] == [
        (D(99_900_000), D("0.01")),
        (D(99_800_000), D("0.05")),
    ]
    assert (book.total_ask_size, book.total_bid_size) == (D("0.03"), D("0.06"))
    (request,) = [r for r in fake.requests if r.path == "/v1/orderbook"]
    assert (request.query, request.group, request.nonce) == ((("markets", BTC),), "orderbook", None)
    assert upbit.limiter.group_of("GET /v1/orderbook", "?") == "orderbook"

    # it is the book orders meet: a market buy consumes it
    await upbit.buy_market(BTC, D(1_500_000), identifier="BTC:buy:book")
    assert [(lv.price, lv.size) for lv in (await upbit.orderbook(BTC)).asks] == [
        (D(100_100_000), D("0.02") - D("0.004995"))
    ]


async def test_the_orderbook_shows_thirty_levels_a_side_and_several_markets(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    fake.add_market("KRW-ETH", tick_size=1000)
    fake.set_book(BTC, asks=[(str(100_000_000 + 1000 * n), "0.1") for n in range(40)], bids=[])
    fake.set_book("KRW-ETH", bids=[("4000000", "2")])
    books = await upbit.orderbooks([BTC, "KRW-ETH"])
    assert len(books[BTC].asks) == 30 and books[BTC].asks[-1].price == D(100_029_000)
    assert books[BTC].bids == () and books["KRW-ETH"].asks == ()
    assert [(lv.price, lv.size) for lv in books["KRW-ETH"].bids] == [(D(4_000_000), D(2))]


async def test_an_orderbook_of_a_market_the_exchange_does_not_list_is_refused(upbit: UpbitClient) -> None:
    with pytest.raises(RequestRefused) as caught:
        await upbit.orderbook("KRW-NOPE")
    assert caught.value.status == 404


async def test_5xx_on_the_orderbook_is_transient(fake: FakeUpbit, upbit: UpbitClient) -> None:
    fake.fail_next(503, path="/v1/orderbook")
    with pytest.raises(ExchangeUnavailable) as caught:
        await upbit.orderbook(BTC)
    assert isinstance(caught.value, TransientError)
    assert len((await upbit.orderbook(BTC)).asks) == 2


async def test_418_is_blocked_and_never_retried(fake: FakeUpbit, upbit: UpbitClient) -> None:
    fake.block()
    with pytest.raises(Blocked) as caught:
        await upbit.buy_market(BTC, D(10_000), identifier="BTC:blocked")
    assert caught.value.status == 418
    assert not isinstance(caught.value, TransientError | PermanentError)
    assert fake.count() == 1 and fake.orders == []


async def test_5xx_on_a_query_is_transient(fake: FakeUpbit, upbit: UpbitClient) -> None:
    fake.fail_next(503, path="/v1/accounts")
    with pytest.raises(ExchangeUnavailable) as caught:
        await upbit.accounts()
    assert caught.value.status == 503 and isinstance(caught.value, TransientError)
    assert len(await upbit.accounts()) == 2  # the next call goes through


async def test_5xx_on_an_order_is_an_unknown_outcome_resolved_by_lookup(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    fake.fail_next(500, method="POST", path="/v1/orders")
    with pytest.raises(OutcomeUnknown) as caught:
        await upbit.buy_market(BTC, D(10_000), identifier="BTC:5xx")
    assert caught.value.identifier == "BTC:5xx" and not isinstance(caught.value, TransientError)
    with pytest.raises(OrderNotFound):  # this 500 came before the exchange booked anything
        await upbit.get_order(identifier="BTC:5xx")


async def test_a_refused_connection_is_transient(fake: FakeUpbit) -> None:
    async with _client(fake, base_url=f"http://127.0.0.1:{free_port()}") as nowhere:
        with pytest.raises(ExchangeUnavailable) as caught:
            await nowhere.buy_market(BTC, D(10_000), identifier="BTC:nowhere")
    assert isinstance(caught.value, TransientError)


async def test_a_slow_query_times_out_as_transient(fake: FakeUpbit) -> None:
    fake.delay_next(1.0, path="/v1/accounts")
    async with _client(fake, timeout=httpx.Timeout(0.2, connect=1.0)) as upbit:
        with pytest.raises(ExchangeUnavailable):
            await upbit.accounts()


async def test_an_order_accepted_then_unanswered_is_outcome_unknown_and_found_once_by_identifier(
    fake: FakeUpbit, upbit: UpbitClient
) -> None:
    fake.accept_then_hang()
    async with _client(fake, timeout=httpx.Timeout(0.5, connect=5.0)) as hasty:
        with pytest.raises(OutcomeUnknown) as caught:
            await hasty.buy_market(BTC, D(10_000), identifier="BTC:lost-answer")
    assert caught.value.identifier == "BTC:lost-answer"
    found = await upbit.get_order(identifier="BTC:lost-answer")
    with pytest.raises(DuplicateIdentifier):  # a blind resend could not double it either
        await upbit.buy_market(BTC, D(10_000), identifier="BTC:lost-answer")
    assert [o.uuid for o in fake.orders_by_identifier("BTC:lost-answer")] == [found.uuid]
    assert found.state is OrderState.DONE and found.executed_funds == D(10_000)


async def test_the_client_waits_out_an_exhausted_group_instead_of_earning_429(fake: FakeUpbit) -> None:
    fake.limits["order"] = 2
    slept: list[float] = []
    real = RateLimiter()

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    real.sleep = recording_sleep
    async with _client(fake, limiter=real) as upbit:
        for n in range(4):
            await upbit.place_limit(BTC, Side.BID, D(90_000_000), D("0.0001"), identifier=f"BTC:rest:{n}")
        accounts = await upbit.accounts()  # the default group was never held up by the order group
    assert [r.status for r in fake.requests if r.path == "/v1/orders"] == [201] * 4
    assert slept and accounts


# -- secrets ---------------------------------------------------------------------------------------


async def test_no_key_or_token_reaches_the_logs_or_the_fake_request_log(
    fake: FakeUpbit, upbit: UpbitClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(503, path="/v1/accounts")
    errors: list[str] = []
    for call in (
        upbit.accounts(),
        upbit.accounts(),
        upbit.buy_market(BTC, D(10_000), identifier="BTC:logged"),
        upbit.get_order(identifier="BTC:logged"),
        upbit.get_order(identifier="missing"),
    ):
        try:
            await call
        except Exception as e:  # every failure's text is checked for secrets too
            errors.append(f"{e!r} {e}")
    secrets = [fake.access_key, fake.secret_key, *fake.tokens_seen]
    assert len(fake.tokens_seen) == 5
    visible = "\n".join([caplog.text, repr(fake.requests), repr(upbit), *errors])
    for secret in secrets:
        assert secret not in visible
