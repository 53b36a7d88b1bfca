"""Which partition a symbol belongs to, and which member of a stage owns which partition: pure.

A stage's symbol-keyed subjects (``candles.1m.<SYM>``, ``indicators.1m.<SYM>``, ...) are spread
over ``n`` partitions by a stable hash of the symbol (FNV-1a, the same in every process and
release; Python's ``hash`` is salted per process). A partition is consumed through durable
consumers of its own whose filter subjects are its symbols' subjects, so one owner at a time sees
a symbol's messages in stream order, however many replicas run.

:func:`assign` is the agreement rule every member computes from the same inputs (the live
members and the current owners): balanced (each member owns ``n // m`` or one more), stable
(the same inputs give the same answer in every process) and moving as little as it can (an owner
keeps its partitions up to its quota; only a dead member's or an over-quota member's partitions
move). ``coinpilot.bus.membership`` turns it into leases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

MAX_PARTITIONS = 16  # the NATS permissions grant each partition's durables by name (bus/permissions.py)
FNV_OFFSET, FNV_PRIME = 0x811C9DC5, 0x01000193


def fnv1a(text: str) -> int:
    """32-bit FNV-1a of ``text``'s UTF-8 bytes."""
    value = FNV_OFFSET
    for byte in text.encode():
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return value


def partition_of(symbol: str, n: int) -> int:
    return fnv1a(symbol) % n


def symbols_of(partition: int, n: int, symbols: Iterable[str]) -> tuple[str, ...]:
    """The symbols of ``partition``, in the order given."""
    return tuple(s for s in symbols if partition_of(s, n) == partition)


def partition_subjects(pattern: str, symbols: Sequence[str]) -> list[str]:
    """``candles.1m.*`` and ``(KRW-BTC,)`` -> ``["candles.1m.KRW-BTC"]``: the symbol is the last token."""
    head, _, last = pattern.rpartition(".")
    if last != "*":
        raise ValueError(f"{pattern!r} is not keyed by symbol (its last token must be *)")
    return [f"{head}.{s}" for s in symbols]


def partition_durable(durable: str, partition: int) -> str:
    return f"{durable}-p{partition}"


def _score(member: str, partition: int) -> int:
    """Rendezvous weight: who gets an orphan partition, the same in every process."""
    return fnv1a(f"{member}/{partition}")


def assign(n: int, members: Iterable[str], owners: Mapping[int, str]) -> dict[int, str]:
    """The owner of each of partitions ``0..n-1`` among ``members``; ``owners``: who holds them now.

    Quotas: ``n // m`` each, one more for ``n % m`` of them, given to those holding most now (then
    by name) so a join or a death moves no partition that need not move. Each member keeps its
    lowest partitions up to its quota; the rest go, in partition order, to the member with room
    whose rendezvous weight for that partition is highest.
    """
    live = sorted(set(members))
    if not live:
        return {}
    held: dict[str, list[int]] = {m: [] for m in live}
    for p in range(n):
        owner = owners.get(p)
        if owner in held:
            held[owner].append(p)
    base, extra = divmod(n, len(live))
    by_holding = sorted(live, key=lambda m: (-len(held[m]), m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}
    result: dict[int, str] = {}
    for m in live:
        for p in held[m][: quota[m]]:
            result[p] = m
    room = {m: quota[m] - sum(1 for o in result.values() if o == m) for m in live}
    for p in range(n):
        if p in result:
            continue
        best = max((m for m in live if room[m] > 0), key=lambda m: (_score(m, p), m))
        result[p] = best
        room[best] -= 1
    return result


def moves(before: Mapping[int, str], after: Mapping[int, str]) -> int:
    """Partitions whose owner changed (a partition that had none does not count)."""
    return sum(1 for p, owner in after.items() if p in before and before[p] != owner)
