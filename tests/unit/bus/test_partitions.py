"""The pure partition rules: a symbol's partition, and who owns which partition."""

from __future__ import annotations

import itertools

import pytest

from coinpilot.bus.partitions import (
    assign,
    fnv1a,
    moves,
    partition_durable,
    partition_of,
    partition_subjects,
    symbols_of,
)
from coinpilot.symbols import DEFAULT_SYMBOLS


def counts(assignment: dict[int, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for owner in assignment.values():
        out[owner] = out.get(owner, 0) + 1
    return out


def test_fnv1a_is_the_published_function() -> None:
    # FNV-1a 32-bit test vectors (Fowler/Noll/Vo)
    assert fnv1a("") == 0x811C9DC5
    assert fnv1a("a") == 0xE40C292C
    assert fnv1a("foobar") == 0xBF9CF968


def test_every_symbol_in_exactly_one_partition() -> None:
    symbols = [f"KRW-S{i}" for i in range(50)]
    for n in (1, 2, 3, 8, 16):
        parts = [symbols_of(p, n, symbols) for p in range(n)]
        assert sorted(itertools.chain.from_iterable(parts)) == sorted(symbols)
        assert all(partition_of(s, n) == p for p in range(n) for s in parts[p])


def test_subjects_and_durables() -> None:
    assert partition_subjects("candles.1m.*", ["KRW-BTC", "KRW-ETH"]) == [
        "candles.1m.KRW-BTC",
        "candles.1m.KRW-ETH",
    ]
    assert partition_durable("indicator-candles", 3) == "indicator-candles-p3"
    with pytest.raises(ValueError, match="keyed by symbol"):
        partition_subjects("risk.alerts", ["KRW-BTC"])


@pytest.mark.parametrize("n", [1, 3, 8, 12, 16])
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_balanced_and_complete(n: int, m: int) -> None:
    members = [f"r{i}" for i in range(m)]
    result = assign(n, members, {})
    assert sorted(result) == list(range(n))
    sizes = counts(result)
    assert max(sizes.values()) - min(sizes.get(x, 0) for x in members) <= 1 or n < m


def test_stable_whatever_the_order_of_members() -> None:
    owners = {0: "b", 1: "b", 2: "a"}
    first = assign(8, ["a", "b", "c"], owners)
    assert assign(8, ["c", "a", "b", "a"], dict(reversed(list(owners.items())))) == first
    assert assign(8, ["a", "b", "c"], first) == first  # a fixed point: nothing moves once settled


def test_a_death_moves_only_the_dead_members_partitions() -> None:
    before = assign(12, ["a", "b", "c"], {})
    after = assign(12, ["a", "c"], {p: o for p, o in before.items() if o != "b"})
    assert {p for p in range(12) if before[p] != after[p]} == {p for p, o in before.items() if o == "b"}
    assert counts(after) == {"a": 6, "c": 6}


def test_a_join_moves_the_minimum() -> None:
    before = assign(12, ["a", "b"], {})
    after = assign(12, ["a", "b", "c"], before)
    assert moves(before, after) == 4  # exactly the newcomer's share
    assert counts(after) == {"a": 4, "b": 4, "c": 4}
    assert all(before[p] == after[p] for p, o in after.items() if o != "c")


def test_uneven_quota_goes_to_who_holds_more() -> None:
    # 8 over 3: quotas 3,3,2; "c" holds 3 already, so it keeps them, and nobody else loses any
    owners = {0: "c", 1: "c", 2: "c", 3: "a", 4: "a", 5: "a", 6: "b", 7: "b"}
    assert assign(8, ["a", "b", "c"], owners) == owners


def test_a_member_holding_too_many_gives_up_its_highest() -> None:
    owners = dict.fromkeys(range(8), "a")
    result = assign(8, ["a", "b"], owners)
    assert [p for p, o in result.items() if o == "a"] == [0, 1, 2, 3]


def test_owners_not_among_members_are_ignored_and_no_members_no_owners() -> None:
    assert set(assign(4, ["x"], {0: "ghost", 1: "ghost"}).values()) == {"x"}
    assert assign(4, [], {0: "a"}) == {}


def test_default_symbols_spread_over_partitions() -> None:
    n = 4
    assert sum(len(symbols_of(p, n, DEFAULT_SYMBOLS)) for p in range(n)) == len(DEFAULT_SYMBOLS)
