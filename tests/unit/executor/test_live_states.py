"""The live order state machine, the identifier, the pre-trade checks and the answer mapping (pure)."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal
from typing import Any

import pytest

from coinpilot.contracts import Regime, RejectReason
from services.executor.core import Execution, Ledger, Position
from services.executor.live.answers import answer_of, execution_of, failure, progress_of
from services.executor.live.checks import Caps, refuse
from services.executor.live.rows import VenueOrderRow
from services.executor.live.states import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    VenueState,
    can_move,
    check_move,
    identifier_for,
    state_of,
)
from services.executor.upbit.models import parse_order
from tests.unit.executor.factories import T0, buy_order, sell_order

D = Decimal
S = VenueState

ALLOWED = {
    (S.INTENDED, S.SUBMITTED),
    (S.INTENDED, S.OPEN),
    (S.INTENDED, S.DONE),
    (S.INTENDED, S.CANCELLED),
    (S.INTENDED, S.FAILED),
    (S.SUBMITTED, S.OPEN),
    (S.SUBMITTED, S.DONE),
    (S.SUBMITTED, S.CANCELLED),
    (S.SUBMITTED, S.FAILED),
    (S.OPEN, S.OPEN),
    (S.OPEN, S.DONE),
    (S.OPEN, S.CANCELLED),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_every_pair_of_states_is_allowed_exactly_when_the_machine_says(current: S, new: S) -> None:
    expected = (current, new) in ALLOWED
    assert can_move(current, new) is expected
    if expected:
        assert check_move(current, new) is new
    else:
        with pytest.raises(IllegalTransition):
            check_move(current, new)


def test_final_states_go_nowhere_and_an_order_on_the_exchange_never_fails() -> None:
    assert {S.DONE, S.CANCELLED, S.FAILED} == FINAL
    assert all(TRANSITIONS[s] == frozenset() for s in FINAL)
    assert not can_move(S.OPEN, S.FAILED)
    assert not any(can_move(s, S.INTENDED) for s in S)  # nothing goes back to "about to send"


def test_the_identifier_is_deterministic_short_and_plain() -> None:
    a = identifier_for("live", "KRW-BTC:2026-03-02T01:00Z:buy")
    assert a == identifier_for("live", "KRW-BTC:2026-03-02T01:00Z:buy")
    assert a != identifier_for("replay-1", "KRW-BTC:2026-03-02T01:00Z:buy")
    assert a != identifier_for("live", "KRW-BTC:2026-03-02T01:01Z:buy")
    assert re.fullmatch(r"cp-[0-9a-f]{32}", a)


def _answer(state: str, ord_type: str = "price", side: str = "bid", **fields: Any) -> Any:
    raw: dict[str, Any] = {
        "uuid": "u-1",
        "identifier": "cp-x",
        "market": "KRW-BTC",
        "side": side,
        "ord_type": ord_type,
        "state": state,
        "price": fields.get("price"),
        "volume": fields.get("volume"),
        "executed_volume": fields.get("executed_volume", "0"),
        "paid_fee": fields.get("paid_fee", "0"),
        "created_at": "2026-12-04T19:00:00+09:00",
        "trades": fields.get("trades", []),
    }
    return parse_order(raw)


def _trade(uuid: str, price: str, volume: str, side: str = "bid") -> dict[str, str]:
    return {
        "market": "KRW-BTC",
        "uuid": uuid,
        "price": price,
        "volume": volume,
        "funds": str(D(price) * D(volume)),
        "side": side,
    }


@pytest.mark.parametrize(
    ("state", "executed", "expected"),
    [("wait", "0", S.OPEN), ("watch", "0", S.OPEN), ("wait", "0.001", S.OPEN), ("done", "0.001", S.DONE),
     ("cancel", "0.001", S.DONE), ("cancel", "0", S.CANCELLED)],
)  # fmt: skip
def test_an_answer_maps_to_open_done_or_cancelled_by_what_executed(
    state: str, executed: str, expected: S
) -> None:
    trades = [_trade("t1", "100000000", executed)] if D(executed) > 0 else []
    assert state_of(_answer(state, price="1000000", executed_volume=executed, trades=trades)) is expected


def test_a_market_buy_ending_cancel_is_done_for_what_executed_and_its_unspent_krw_is_dust() -> None:
    answer = _answer(
        "cancel",
        price="1500000",
        executed_volume="0.014995",
        paid_fee="749.99975",
        trades=[_trade("t1", "100000000", "0.01"), _trade("t2", "100100000", "0.004995")],
    )
    progress = progress_of(answer, D(5000), D(100_000_000))
    assert (progress.state, progress.executed_volume, progress.funds) == (
        S.DONE,
        D("0.014995"),
        D("1499999.5"),
    )
    assert (progress.remainder, progress.dust) == (D("0.5"), True)
    assert [t["uuid"] for t in progress.trades] == ["t1", "t2"]
    row = _row(
        S.DONE, executed_volume=progress.executed_volume, funds=progress.funds, paid_fee=progress.paid_fee
    )
    # 1,499,999.5 / 0.014995 = 100,033,311.103701233..., rounded up for a BUY
    assert execution_of(buy_order("100000000", "1500000"), row) == Execution(
        fill_price=D("100033311.10370124"), quantity=D("0.014995"), amount=D("1499999.5"), fee=D("749.99975")
    )


def _row(state: S, **fields: Any) -> VenueOrderRow:
    return VenueOrderRow(
        run_id="r", order_id="o", identifier="cp-x", market="KRW-BTC", side="bid", ord_type="price",
        amount=D(1_000_000), volume=None, min_total=D(5000), state=state, **fields,
    )  # fmt: skip


def test_final_rows_answer_the_ledger_and_others_do_not() -> None:
    order = buy_order("100000000", "1000000")
    cancelled = answer_of(order, _row(S.CANCELLED, exchange_state="cancel"))
    assert cancelled.reason is RejectReason.VENUE_NOTHING_EXECUTED  # type: ignore[union-attr]
    refused = answer_of(
        order,
        _row(S.FAILED, last_error=failure(RejectReason.VENUE_REFUSED, "upbit insufficient_funds_bid: x")),
    )
    assert (refused.reason, refused.message) == (
        RejectReason.VENUE_REFUSED,
        "upbit insufficient_funds_bid: x",
    )  # type: ignore[union-attr]
    lost = answer_of(order, _row(S.FAILED, last_error=failure(RejectReason.VENUE_NOT_PLACED, "gone")))
    assert lost.reason is RejectReason.VENUE_NOT_PLACED  # type: ignore[union-attr]
    for state in (S.INTENDED, S.SUBMITTED, S.OPEN):
        with pytest.raises(ValueError, match="not final"):
            answer_of(order, _row(state))


CAPS = Caps(per_order=D(1_000_000), per_day=D(2_000_000))
CASH = Ledger("KRW", D(10_000_000))
FEE = D("0.0005")


@pytest.mark.parametrize(
    ("amount", "spent", "cash", "reason"),
    [
        ("1000000", "0", CASH, None),
        ("1000001", "0", CASH, RejectReason.ORDER_CAP_EXCEEDED),
        ("1000000", "1000001", CASH, RejectReason.DAILY_CAP_EXCEEDED),
        ("1000000", "1000000", CASH, None),
        ("4999", "0", CASH, RejectReason.BELOW_EXCHANGE_MINIMUM),
        ("1000000", "0", Ledger("KRW", D("1000499.99")), RejectReason.INSUFFICIENT_BALANCE),
        ("1000000", "0", Ledger("KRW", D("1000500")), None),
    ],
)
def test_a_buy_is_refused_over_a_cap_under_the_minimum_or_beyond_cash(
    amount: str, spent: str, cash: Ledger, reason: RejectReason | None
) -> None:
    refused = refuse(buy_order("100000000", amount), cash, CAPS, D(spent), D(5000), FEE)
    assert (refused.reason if refused else None) is reason


def test_a_sell_is_never_capped_but_a_position_under_the_minimum_is_dust() -> None:
    def held(quantity: str) -> Ledger:
        position = Position("KRW-BTC", D(quantity), D(100_000_000), Regime.BULL, D(100_000_000), T0, "b")
        return Ledger("KRW", D(0), position)

    order = sell_order("100000000", opened_by="b", quantity="1", avg_price="1", high_water_mark="1")
    assert refuse(order, held("0.5"), CAPS, D(10**9), D(5000), FEE) is None  # 50,000,000 KRW: not capped
    dust = refuse(order, held("0.00004999"), CAPS, D(0), D(5000), FEE)
    assert dust is not None and dust.reason is RejectReason.BELOW_EXCHANGE_MINIMUM
    nothing = refuse(order, Ledger("KRW", D(0)), CAPS, D(0), D(5000), FEE)
    assert nothing is not None and nothing.reason is RejectReason.NO_POSITION
