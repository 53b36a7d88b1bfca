"""The strategy's handlers, written once: lock the symbols' state, call the core, save, return signals.

The service (``app.py``) runs them over PostgreSQL (``state.pg_strategy_book``, every handler taking
the symbol's row lock so the indicator, fill and rejection consumers never interleave on a symbol,
even across replicas) and the Redis mirror; the backtest runs the same object over memory
(``memory_book.MemoryStrategyBook``) with no mirror. Decisions are the core's; this module puts
them in order and counts and logs them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from coinpilot import fill_ledger
from coinpilot.contracts import Contract, EntrySignal, ExitSignal, Fill, IndicatorSnapshot, OrderRejected
from coinpilot.fill_ledger import RecordedFill
from services.strategy import core, metrics
from services.strategy.params import StrategyParams

Key = tuple[str, str]  # (run_id, symbol)


class StrategyTx(Protocol):
    """One transaction of the strategy's state (the symbols' rows locked until it ends)."""

    async def lock_states(self, keys: Iterable[Key]) -> dict[Key, core.SymbolState]: ...

    async def lock_state_with_fill(
        self, run_id: str, symbol: str, order_id: str
    ) -> tuple[core.SymbolState, RecordedFill | None]: ...

    async def save_states(self, states: Iterable[tuple[str, core.SymbolState]]) -> None: ...

    async def load_all(self, run_id: str) -> list[core.SymbolState]: ...


class StrategyBook(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[StrategyTx]: ...


class StatusMirror(Protocol):
    """The dashboard's keys (``bot:status``, ``position_hwm``); never read by a decision."""

    async def after_batch(
        self, statuses: Mapping[Key, dict[str, object]], positions: Mapping[Key, core.Position | None]
    ) -> None: ...

    async def hwm(self, run_id: str, symbol: str, position: core.Position | None) -> None: ...

    async def hwms(self, run_id: str, states: Sequence[core.SymbolState]) -> None: ...


@dataclass
class StrategyHandlers:
    params: StrategyParams
    book: StrategyBook
    mirror: StatusMirror
    log: logging.Logger

    async def on_snapshots(
        self, snapshots: Sequence[tuple[str, IndicatorSnapshot]]
    ) -> list[Sequence[Contract]]:
        """A run of ``(run_id, snapshot)`` in stream order, in one transaction holding their symbols'
        row locks; each symbol's state is read once, carried through its candles, written once."""
        outputs: list[Sequence[Contract]] = []
        statuses: dict[Key, dict[str, object]] = {}
        positions: dict[Key, core.Position | None] = {}
        async with self.book.transaction() as tx:
            states = await tx.lock_states([(run_id, s.symbol) for run_id, s in snapshots])
            before = dict(states)
            for run_id, snapshot in snapshots:
                key = (run_id, snapshot.symbol)
                step = core.on_snapshot(states[key], snapshot, self.params)
                states[key] = step.state
                outputs.append(step.out)
                evaluation = step.evaluation
                if evaluation is not None:
                    metrics.EVALUATIONS.labels(
                        snapshot.symbol, evaluation.action.value, evaluation.reason
                    ).inc()
                    statuses[key] = core.status_payload(step.state, snapshot, evaluation)
                    positions[key] = step.state.position
                self._count_signals(step.out)
            changed = [(run_id, s) for (run_id, symbol), s in states.items() if s != before[(run_id, symbol)]]
            await tx.save_states(changed)
        await self.mirror.after_batch(statuses, positions)
        return outputs

    async def on_fill(self, run_id: str, fill: Fill) -> Sequence[Contract]:
        """A fill is a notification: applied only when the executor's ledger recorded exactly it
        (read with the row lock); otherwise refused, nothing changed (the ladder dead-letters it
        and publishes the CRITICAL alert)."""
        async with self.book.transaction() as tx:
            before, recorded = await tx.lock_state_with_fill(run_id, fill.symbol, fill.order_id)
            reason = core.fill_refusal(before, fill, recorded)
            if reason is not None:
                self.log.error("fill %s of %s refused: %s", fill.order_id, fill.symbol, reason)
                raise fill_ledger.refusal(fill, reason)
            after = core.on_fill(before, fill)
            if after != before:
                await tx.save_states([(run_id, after)])
        metrics.OPEN_POSITIONS.labels(fill.symbol).set(0 if after.position is None else 1)
        await self.mirror.hwm(run_id, fill.symbol, after.position)
        return ()

    async def on_rejection(self, run_id: str, rejected: OrderRejected) -> Sequence[Contract]:
        async with self.book.transaction() as tx:
            key = (run_id, rejected.symbol)
            before = (await tx.lock_states([key]))[key]
            after = core.on_rejection(before, rejected)
            if after != before:
                await tx.save_states([(run_id, after)])
                self.log.info(
                    "pending %s freed by %s rejection %s", rejected.order_id, rejected.stage, rejected.reason
                )
        if before.position is not None and after.position is None:  # nothing left to sell, or dust
            metrics.OPEN_POSITIONS.labels(rejected.symbol).set(0)
            await self.mirror.hwm(run_id, rejected.symbol, None)
        return ()

    async def warm(self, run_id: str) -> list[core.SymbolState]:
        """Read every symbol's state of the run and refresh the mirror's HWMs from it (the truth)."""
        async with self.book.transaction() as tx:
            states = await tx.load_all(run_id)
        for s in states:
            metrics.OPEN_POSITIONS.labels(s.symbol).set(0 if s.position is None else 1)
        await self.mirror.hwms(run_id, states)
        return states

    def _count_signals(self, signals: Sequence[EntrySignal | ExitSignal]) -> None:
        for signal in signals:
            kind = "entry" if isinstance(signal, EntrySignal) else "exit"
            reason = signal.reason if isinstance(signal, EntrySignal) else signal.exit_reason
            metrics.SIGNALS.labels(signal.symbol, kind, reason.value).inc()
            self.log.info("%s signal %s %s at %s", kind, signal.symbol, reason.value, signal.price)
