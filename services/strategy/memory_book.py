"""The strategy's state in memory (the backtest's): ``handlers.StrategyBook`` over a dictionary.

A transaction applies its writes when the handler returns and drops them when it raises, as a
rollback would. The ledger's record of a fill is read through the callable the run gives (it is
the executor's ledger).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal

from coinpilot.fill_ledger import RecordedFill
from services.strategy.core import Position, SymbolState

Key = tuple[str, str]  # (run_id, symbol)
EIGHT_DP = Decimal("0.00000001")
#: ``(run_id, order_id) -> RecordedFill`` (what ``trading_history`` holds), if any.
FillReader = Callable[[str, str], RecordedFill | None]


def as_stored(state: SymbolState) -> SymbolState:
    """The state as ``strategy_state`` gives it back: its money NUMERIC(20,8), rounded half away
    from zero (so a run in memory emits the figures a distributed run does, to the byte)."""
    position = state.position
    if position is None:
        return state
    return replace(
        state,
        position=replace(
            position,
            avg_price=_numeric(position.avg_price),
            quantity=_numeric(position.quantity),
            high_water_mark=_numeric(position.high_water_mark),
        ),
    )


def _numeric(value: Decimal) -> Decimal:
    return value.quantize(EIGHT_DP, rounding=ROUND_HALF_UP)


@dataclass
class MemoryStrategyBook:
    recorded_fill: FillReader
    states: dict[Key, SymbolState] = field(default_factory=dict)

    def state(self, run_id: str, symbol: str) -> SymbolState:
        return self.states.get((run_id, symbol)) or SymbolState(symbol=symbol)

    def store(self, run_id: str, state: SymbolState) -> None:
        """Write a state outside a handler's transaction (the fast path's step over holds)."""
        self.states[(run_id, state.symbol)] = as_stored(state)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryStrategyTx]:
        tx = MemoryStrategyTx(self)
        yield tx
        self.states.update(tx.written)


class MemoryStrategyTx:
    def __init__(self, book: MemoryStrategyBook) -> None:
        self.book = book
        self.written: dict[Key, SymbolState] = {}

    async def lock_states(self, keys: Iterable[Key]) -> dict[Key, SymbolState]:
        return {key: self.written.get(key) or self.book.state(*key) for key in keys}

    async def lock_state_with_fill(
        self, run_id: str, symbol: str, order_id: str
    ) -> tuple[SymbolState, RecordedFill | None]:
        key = (run_id, symbol)
        return self.written.get(key) or self.book.state(*key), self.book.recorded_fill(run_id, order_id)

    async def save_states(self, states: Iterable[tuple[str, SymbolState]]) -> None:
        for run_id, state in states:
            self.written[(run_id, state.symbol)] = as_stored(state)

    async def load_all(self, run_id: str) -> list[SymbolState]:
        return [s for (r, _), s in sorted(self.book.states.items()) if r == run_id]


class NoMirror:
    """``handlers.StatusMirror`` for a run with no dashboard (the backtest): writes nothing."""

    async def after_batch(
        self, statuses: Mapping[Key, dict[str, object]], positions: Mapping[Key, Position | None]
    ) -> None:
        return None

    async def hwm(self, run_id: str, symbol: str, position: Position | None) -> None:
        return None

    async def hwms(self, run_id: str, states: Sequence[SymbolState]) -> None:
        return None
