"""What a partitioned service's own task follows: the owned symbols and their changes."""

from __future__ import annotations

import pytest

from coinpilot.runtime.owned import OwnedSymbols, ownership_change

ORDER = ("KRW-BTC", "KRW-ETH", "KRW-SOL", "KRW-DOGE")


@pytest.mark.parametrize(
    ("followed", "owned", "expected"),
    [
        pytest.param(set(), {"KRW-DOGE", "KRW-BTC"}, (("KRW-BTC", "KRW-DOGE"), ()), id="first-take"),
        pytest.param({"KRW-BTC", "KRW-SOL"}, {"KRW-BTC"}, ((), ("KRW-SOL",)), id="a-release"),
        pytest.param(
            {"KRW-SOL", "KRW-BTC"}, {"KRW-ETH", "KRW-BTC"}, (("KRW-ETH",), ("KRW-SOL",)), id="a-move"
        ),
        pytest.param({"KRW-ETH"}, {"KRW-ETH"}, ((), ()), id="no-change"),
        pytest.param(set(), {"KRW-XRP", "KRW-ETH"}, (("KRW-ETH", "KRW-XRP"), ()), id="unlisted-last"),
    ],
)
def test_ownership_change_lists_takes_and_releases_in_the_settings_order(
    followed: set[str], owned: set[str], expected: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    assert ownership_change(followed, owned, ORDER) == expected


async def test_a_change_sets_the_event_taken_before_it_and_only_that_one() -> None:
    owned = OwnedSymbols()
    before = owned.next_change()
    owned.add(["KRW-BTC", "KRW-ETH"])
    assert before.is_set() and owned.symbols == {"KRW-BTC", "KRW-ETH"} and "KRW-BTC" in owned
    after = owned.next_change()
    assert not after.is_set()
    owned.discard(["KRW-BTC"])
    assert after.is_set() and "KRW-BTC" not in owned


async def test_a_call_that_changes_nothing_is_no_change() -> None:
    owned = OwnedSymbols(["KRW-BTC"])
    event = owned.next_change()
    owned.add(["KRW-BTC"])
    owned.discard(["KRW-SOL"])
    assert not event.is_set() and owned.symbols == {"KRW-BTC"}
