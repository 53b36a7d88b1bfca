"""How ``UpbitClient`` classifies answers the fake exchange does not produce (httpx's MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from coinpilot.errors import PermanentError
from services.executor.upbit import Credentials, MalformedAnswer, OutcomeUnknown, RequestRefused, UpbitClient


def _client(answer: Callable[[httpx.Request], httpx.Response]) -> UpbitClient:
    return UpbitClient(
        Credentials.of("access", "secret"),
        base_url="http://upbit.test",
        transport=httpx.MockTransport(answer),
    )


async def test_an_order_answered_with_something_not_json_is_an_unknown_outcome() -> None:
    async with _client(lambda _: httpx.Response(201, text="<html>ok</html>")) as upbit:
        with pytest.raises(OutcomeUnknown) as caught:
            await upbit.buy_market("KRW-BTC", Decimal(10_000), identifier="id-1")
    assert caught.value.identifier == "id-1"


async def test_an_order_answered_with_json_that_is_no_order_is_an_unknown_outcome() -> None:
    async with _client(lambda _: httpx.Response(201, json={"uuid": "u"})) as upbit:
        with pytest.raises(OutcomeUnknown):
            await upbit.buy_market("KRW-BTC", Decimal(10_000), identifier="id-2")


async def test_a_query_answered_with_something_not_json_is_malformed() -> None:
    async with _client(lambda _: httpx.Response(200, text="not json")) as upbit:
        with pytest.raises(MalformedAnswer) as caught:
            await upbit.accounts()
    assert isinstance(caught.value, PermanentError)


async def test_an_error_without_upbits_body_is_named_by_its_status() -> None:
    async with _client(lambda _: httpx.Response(400, text="Bad Request")) as upbit:
        with pytest.raises(RequestRefused) as caught:
            await upbit.chance("KRW-BTC")
    assert (caught.value.name, caught.value.status) == ("http_400", 400)


async def test_the_order_body_is_json_strings_in_upbits_field_order() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(400, json={"error": {"name": "validation_error", "message": "stop here"}})

    async with _client(answer) as upbit:
        with pytest.raises(RequestRefused):
            await upbit.sell_market("KRW-BTC", Decimal("0.00100000"), identifier="id-3")
    assert seen[0].content == (
        b'{"market":"KRW-BTC","side":"ask","volume":"0.001","ord_type":"market","identifier":"id-3"}'
    )
    assert seen[0].headers["authorization"].startswith("Bearer ")


async def test_the_orderbook_is_public_and_its_numbers_are_read_as_decimals_from_the_text() -> None:
    """Upbit writes the book's numbers as JSON numbers: read as floats, 17 digits would not survive."""
    seen: list[httpx.Request] = []
    body = (
        b'[{"market":"KRW-BTC","timestamp":1,"total_ask_size":0.1,"total_bid_size":0.3,'
        b'"orderbook_units":[{"ask_price":100000000.1,"bid_price":99999999.9,'
        b'"ask_size":1.23456789012345678,"bid_size":0.3}]}]'
    )

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, content=body, headers={"Remaining-Req": "group=orderbook; min=1800; sec=9"}
        )

    async with _client(answer) as upbit:
        book = await upbit.orderbook("KRW-BTC")
        assert upbit.limiter.left("orderbook") == 9
    assert (book.asks[0].price, book.asks[0].size) == (Decimal("100000000.1"), Decimal("1.23456789012345678"))
    assert (book.bids[0].price, book.bids[0].size) == (Decimal("99999999.9"), Decimal("0.3"))
    assert seen[0].url.path == "/v1/orderbook" and seen[0].url.params["markets"] == "KRW-BTC"
    assert "authorization" not in seen[0].headers


async def test_an_orderbook_answer_without_the_market_is_malformed() -> None:
    async with _client(lambda _: httpx.Response(200, json=[])) as upbit:
        with pytest.raises(MalformedAnswer):
            await upbit.orderbook("KRW-BTC")
