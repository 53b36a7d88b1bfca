"""Composition root of the strategy: three consumers over one per-symbol state, and the cache mirror.

Every handler takes the symbol's row lock (``SELECT ... FOR UPDATE``) so the indicator, fill and
rejection consumers never interleave on a symbol, even across replicas. A candle's signals are
returned to the runtime, which publishes them after the state committed and then acks.
"""

from __future__ import annotations

from collections.abc import Sequence

from coinpilot import fill_ledger
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract, EntrySignal, ExitSignal, Fill, IndicatorSnapshot, OrderRejected
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.strategy import core, metrics, state
from services.strategy.settings import StrategySettings

INDICATORS, INDICATORS_DURABLE = "indicators.1m.*", "strategy-indicators"
FILLS, FILLS_DURABLE = "fills.*", "strategy-fills"
REJECTIONS, REJECTIONS_DURABLE = "orders.rejected.*", "strategy-rejections"


def build(rt: Runtime) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("the strategy needs PostgreSQL (COINPILOT_DATABASE_URL) for its state")
    db = rt.db
    settings = StrategySettings()
    params = settings.params(rt.settings.strategy_config)
    mirror = state.Mirror(rt.cache, settings.cache_retry_seconds)

    async def on_snapshots(ds: Sequence[Delivery[IndicatorSnapshot]]) -> list[Sequence[Contract]]:
        """A fetched run of snapshots, in stream order, in one transaction holding their symbols'
        row locks; each symbol's state is read once, carried through its candles, written once."""
        outputs: list[Sequence[Contract]] = []
        statuses: dict[state.Key, dict[str, object]] = {}
        positions: dict[state.Key, core.Position | None] = {}
        async with db.transaction() as conn:
            states = await state.lock_states(conn, [(d.run_id, d.message.symbol) for d in ds])
            before = dict(states)
            for d in ds:
                snapshot, key = d.message, (d.run_id, d.message.symbol)
                step = core.on_snapshot(states[key], snapshot, params)
                states[key] = step.state
                outputs.append(step.out)
                evaluation = step.evaluation
                if evaluation is not None:
                    metrics.EVALUATIONS.labels(
                        snapshot.symbol, evaluation.action.value, evaluation.reason
                    ).inc()
                    statuses[key] = core.status_payload(step.state, snapshot, evaluation)
                    positions[key] = step.state.position
                _count_signals(step.out)
            changed = [(run_id, s) for (run_id, symbol), s in states.items() if s != before[(run_id, symbol)]]
            await state.save_states(conn, changed, wall_clock_now())
        await mirror.after_batch(statuses, positions)
        return outputs

    def _count_signals(signals: Sequence[EntrySignal | ExitSignal]) -> None:
        for signal in signals:
            kind = "entry" if isinstance(signal, EntrySignal) else "exit"
            reason = signal.reason if isinstance(signal, EntrySignal) else signal.exit_reason
            metrics.SIGNALS.labels(signal.symbol, kind, reason.value).inc()
            rt.log.info("%s signal %s %s at %s", kind, signal.symbol, reason.value, signal.price)

    async def on_fill(d: Delivery[Fill]) -> Sequence[Contract]:
        """A fill is a notification: applied only when the executor's ledger recorded exactly it
        (read with the row lock); otherwise refused, nothing changed (the ladder dead-letters it
        and publishes the CRITICAL alert)."""
        fill = d.message
        async with db.transaction() as conn:
            before, recorded = await state.lock_state_with_fill(conn, d.run_id, fill.symbol, fill.order_id)
            reason = core.fill_refusal(before, fill, recorded)
            if reason is not None:
                rt.log.error("fill %s of %s refused: %s", fill.order_id, fill.symbol, reason)
                raise fill_ledger.refusal(fill, reason)
            after = core.on_fill(before, fill)
            if after != before:
                await state.save_state(conn, d.run_id, after, wall_clock_now())
        metrics.OPEN_POSITIONS.labels(fill.symbol).set(0 if after.position is None else 1)
        await mirror.hwm(d.run_id, fill.symbol, after.position)
        return ()

    async def on_rejection(d: Delivery[OrderRejected]) -> Sequence[Contract]:
        rejected = d.message
        async with db.transaction() as conn:
            before = await state.load_state(conn, d.run_id, rejected.symbol)
            after = core.on_rejection(before, rejected)
            if after != before:
                await state.save_state(conn, d.run_id, after, wall_clock_now())
                rt.log.info(
                    "pending %s freed by %s rejection %s", rejected.order_id, rejected.stage, rejected.reason
                )
        return ()

    async def warm(rt: Runtime) -> None:
        """Read every symbol's state of this run and refresh the HWM cache from it (the truth)."""
        async with db.transaction() as conn:
            states = await state.load_all(conn, rt.settings.run_id)
        for s in states:
            metrics.OPEN_POSITIONS.labels(s.symbol).set(0 if s.position is None else 1)
        await mirror.hwms(rt.settings.run_id, states)
        rt.log.info(
            "strategy warmed: %d symbols, %d positions",
            len(states),
            sum(s.position is not None for s in states),
        )

    return ServiceDefinition(
        name="strategy",
        consumers=[
            Consumer.of_batches(INDICATORS, INDICATORS_DURABLE, on_snapshots, parser_for(IndicatorSnapshot)),
            Consumer(FILLS, FILLS_DURABLE, on_fill, parser_for(Fill)),
            Consumer(REJECTIONS, REJECTIONS_DURABLE, on_rejection, parser_for(OrderRejected)),
        ],
        on_start=warm,
    )
