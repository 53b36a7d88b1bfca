"""Composition root of the strategy: its handlers (``handlers.py``) over PostgreSQL and the Redis
mirror, as three consumers.

Every handler takes the symbol's row lock (``SELECT ... FOR UPDATE``) so the indicator, fill and
rejection consumers never interleave on a symbol, even across replicas. A candle's signals are
returned to the runtime, which publishes them after the state committed and then acks. The
backtest runs the same handlers over memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from coinpilot.contracts import Contract, Fill, IndicatorSnapshot, OrderRejected
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.strategy import state
from services.strategy.handlers import StrategyHandlers
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

    handlers = StrategyHandlers(
        params=params,
        book=state.pg_strategy_book(db),
        mirror=state.Mirror(rt.cache, settings.cache_retry_seconds),
        log=rt.log,
    )

    async def on_snapshots(ds: Sequence[Delivery[IndicatorSnapshot]]) -> list[Sequence[Contract]]:
        return await handlers.on_snapshots([(d.run_id, d.message) for d in ds])

    async def on_fill(d: Delivery[Fill]) -> Sequence[Contract]:
        return await handlers.on_fill(d.run_id, d.message)

    async def on_rejection(d: Delivery[OrderRejected]) -> Sequence[Contract]:
        return await handlers.on_rejection(d.run_id, d.message)

    async def warm(rt: Runtime) -> None:
        """Read every symbol's state of this run and refresh the HWM cache from it (the truth)."""
        states = await handlers.warm(rt.settings.run_id)
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
        # every consumer is keyed by symbol; the state is read under its row lock on every message,
        # so nothing per symbol is held in memory across messages (no ``forget``)
        partition_by_symbol=True,
    )
