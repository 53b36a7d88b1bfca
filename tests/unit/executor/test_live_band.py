"""The walk of a live market order over the book, and the band it must stay in (``live/band.py``)."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from coinpilot.contracts import RejectReason
from services.executor.live.band import Walk, refuse_off_book, walk_asks, walk_bids
from services.executor.upbit.models import BookLevel, Orderbook
from tests.unit.executor.factories import buy_order, sell_order

D = Decimal
BAND = D("0.02")


def levels(*pairs: tuple[str, str]) -> tuple[BookLevel, ...]:
    return tuple(BookLevel(D(price), D(size)) for price, size in pairs)


def exact(numerator: int, denominator: int, *, plus: str = "0") -> Decimal:
    """``plus`` + numerator / denominator to the walk's precision (60 digits)."""
    with localcontext(prec=60):
        return D(plus) + D(numerator) / D(denominator)


def book(asks: tuple[BookLevel, ...] = (), bids: tuple[BookLevel, ...] = ()) -> Orderbook:
    return Orderbook("KRW-BTC", 0, asks, bids, D(0), D(0))


@pytest.mark.parametrize(
    ("asks", "amount", "expected"),
    [
        pytest.param(
            levels(("100000000", "1")),  # one deep level
            D(1_000_000),
            Walk(D("0.01"), D(1_000_000), 1, complete=True),
            id="one-level-fills",
        ),
        pytest.param(
            levels(("100000000", "0.004"), ("100100000", "0.003"), ("101000000", "1")),
            D(1_000_000),  # 400,000 + 300,300 + 299,700 at 101,000,000
            Walk(exact(299_700, 101_000_000, plus="0.007"), D(1_000_000), 3, complete=True),
            id="three-levels-fill",
        ),
        pytest.param(
            levels(("100000000", "0.004"), ("100100000", "0.003")),
            D(1_000_000),  # the book holds 700,300
            Walk(D("0.007"), D(700_300), 2, complete=False),
            id="thin-book-runs-out",
        ),
        pytest.param(levels(), D(1_000_000), Walk(D(0), D(0), 0, complete=False), id="empty-book"),
        pytest.param(
            levels(("100000000", "0.01"), ("200000000", "1")),
            D(1_000_000),  # exactly the first level: the second is never touched
            Walk(D("0.01"), D(1_000_000), 1, complete=True),
            id="exactly-one-level",
        ),
    ],
)
def test_walk_asks_spends_the_amount_from_the_best_ask_up(
    asks: tuple[BookLevel, ...], amount: Decimal, expected: Walk
) -> None:
    assert walk_asks(asks, amount) == expected


@pytest.mark.parametrize(
    ("bids", "volume", "expected"),
    [
        pytest.param(
            levels(("99900000", "0.005"), ("99800000", "1")),
            D("0.007"),  # 0.005 x 99,900,000 + 0.002 x 99,800,000
            Walk(D("0.007"), D(699_100), 2, complete=True),
            id="two-levels-fill",
        ),
        pytest.param(
            levels(("99900000", "0.005")),
            D("0.007"),
            Walk(D("0.005"), D(499_500), 1, complete=False),
            id="thin-book-runs-out",
        ),
        pytest.param(levels(), D("0.007"), Walk(D(0), D(0), 0, complete=False), id="empty-book"),
    ],
)
def test_walk_bids_sells_the_volume_from_the_best_bid_down(
    bids: tuple[BookLevel, ...], volume: Decimal, expected: Walk
) -> None:
    assert walk_bids(bids, volume) == expected


def test_average_price_rounds_against_the_account() -> None:
    walk = Walk(D(3), D(10), 1, complete=True)  # 3.333...
    assert walk.average_price(buy_order("3", "10").side) == D("3.33333334")
    sell = sell_order("3", opened_by="x", quantity="3", avg_price="3", high_water_mark="3")
    assert walk.average_price(sell.side) == D("3.33333333")
    assert Walk(D(0), D(0), 0, complete=False).average_price(sell.side) is None


BUY = buy_order("100000000", "1000000")
SELL = sell_order(
    "100000000", opened_by=BUY.order_id, quantity="0.01", avg_price="100000000", high_water_mark="100000000"
)


@pytest.mark.parametrize(
    ("asks", "refused"),
    [
        pytest.param(levels(("101990000", "1")), None, id="just-inside-the-band"),
        pytest.param(levels(("102000000", "1")), None, id="on-the-band-edge"),
        pytest.param(levels(("102001000", "1")), "2.00% away", id="just-outside-the-band"),
        pytest.param(levels(("97000000", "1")), "3.00% away", id="below-the-band-too"),
        # a thin top level at the reference, the rest far above: the average says so
        pytest.param(levels(("100000000", "0.001"), ("110000000", "1")), "8.91% away", id="thin-top"),
        # far levels that move the average less than the band: the average is what is paid
        pytest.param(levels(("100000000", "0.009"), ("110000000", "1")), None, id="deep-enough-top"),
        pytest.param(levels(("100000000", "0.009")), "cannot fill the order", id="runs-out"),
    ],
)
def test_a_buy_is_refused_when_its_average_is_out_of_band_or_the_book_cannot_fill_it(
    asks: tuple[BookLevel, ...], refused: str | None
) -> None:
    rejection = refuse_off_book(BUY, book(asks=asks), D(1_000_000), BAND)
    if refused is None:
        assert rejection is None
    else:
        assert rejection is not None and rejection.reason is RejectReason.PRICE_OUT_OF_BAND
        assert refused in rejection.message


def test_a_sell_is_walked_over_the_bids_for_its_volume() -> None:
    inside = book(bids=levels(("99000000", "0.005"), ("98000000", "1")), asks=levels(("50000000", "9")))
    assert refuse_off_book(SELL, inside, D("0.01"), BAND) is None  # the asks play no part

    outside = book(bids=levels(("99000000", "0.005"), ("96000000", "1")))  # average 97,500,000
    rejection = refuse_off_book(SELL, outside, D("0.01"), BAND)
    assert rejection is not None and rejection.reason is RejectReason.PRICE_OUT_OF_BAND
    assert rejection.message == (
        "venue quote 97500000.00000000 is 2.50% away from the reference price 100000000 (band 2.00%): "
        "the average of the KRW-BTC bid book over 2 level(s) for 0.01 BTC"
    )


def test_a_sell_the_bids_cannot_absorb_is_refused() -> None:
    rejection = refuse_off_book(SELL, book(bids=levels(("100000000", "0.004"))), D("0.01"), BAND)
    assert rejection is not None and rejection.reason is RejectReason.PRICE_OUT_OF_BAND
    assert rejection.message.startswith(
        "the KRW-BTC bid book shows 1 level(s) holding 0.004 BTC of the order's 0.01: "
        "it cannot fill the order"
    )
