"""The symbols whose partitions this replica holds right now, for a service's own tasks.

A partitioned stage's consumers follow their partitions by themselves (``runtime/partitioned.py``);
a task that works per symbol outside the bus (the collector's Upbit poller) reads this instead.
The runtime adds a partition's symbols once its durables are ready and removes them *before* it
stops them, on a release as on a loss, so a task that checks before each step stops at once.

:func:`ownership_change` is the pure part: what a task that followed some symbols must start and
stop to follow the owned ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Sequence


def ownership_change(
    followed: Collection[str], owned: Collection[str], order: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(taken, given up): owned symbols not followed yet and followed ones no longer owned, each
    in ``order`` (the settings' symbol list; a symbol outside it comes last, by name)."""
    rank = {s: i for i, s in enumerate(order)}

    def ordered(symbols: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(symbols, key=lambda s: (rank.get(s, len(rank)), s)))

    return ordered(set(owned) - set(followed)), ordered(set(followed) - set(owned))


class OwnedSymbols:
    """A set of symbols that says when it changes: ``next_change()`` is an event set at the next
    change. Take it *before* reading ``symbols``, so a change meanwhile is never missed."""

    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self._symbols = frozenset(symbols)
        self._next = asyncio.Event()

    @property
    def symbols(self) -> frozenset[str]:
        return self._symbols

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    def add(self, symbols: Iterable[str]) -> None:
        self._set(self._symbols | frozenset(symbols))

    def discard(self, symbols: Iterable[str]) -> None:
        self._set(self._symbols - frozenset(symbols))

    def next_change(self) -> asyncio.Event:
        return self._next

    def _set(self, symbols: frozenset[str]) -> None:
        if symbols == self._symbols:
            return
        self._symbols = symbols
        changed, self._next = self._next, asyncio.Event()
        changed.set()
