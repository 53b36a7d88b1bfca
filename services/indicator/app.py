"""Composition root of the indicator: config from the strategy YAML, the candle handler, one consumer."""

from __future__ import annotations

from collections.abc import Sequence

from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.errors import ConfigError
from coinpilot.market_checks import parse_candle
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition
from services.indicator.handlers import CandleHandler
from services.indicator.settings import IndicatorSettings, load_config
from services.indicator.state import MarketDataStore

SUBJECT = "candles.1m.*"
DURABLE = "indicator-candles"


def build(rt: Runtime) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError(
            "the indicator needs PostgreSQL (COINPILOT_DATABASE_URL): warm-up and regime_history"
        )
    settings = IndicatorSettings()
    config, regime_ttl = load_config(rt.settings.strategy_config)
    handler = CandleHandler(
        MarketDataStore(rt.db, rt.cache),
        config,
        regime_ttl_seconds=regime_ttl,
        keep_outputs=settings.recent_outputs_per_symbol,
        log=rt.log,
        gauge_run_id=rt.settings.run_id,
    )

    async def on_candles(ds: Sequence[Delivery[MinuteCandle]]) -> list[tuple[Contract, ...]]:
        """A fetched run of candles, in stream order; the runtime publishes the outputs in that
        order (so snapshots leave in candle order) and then acks."""
        return await handler.handle_batch([(d.message, d.run_id) for d in ds], [d.subject for d in ds])

    def forget(symbols: frozenset[str]) -> None:
        """A partition given up or taken (COINPILOT_PARTITIONS > 1): drop its symbols' states
        and candle tracks, so the next candle warms them from market_data."""
        handler.entries = {k: v for k, v in handler.entries.items() if k[1] not in symbols}
        handler.gate.tracks = {k: v for k, v in handler.gate.tracks.items() if k[1] not in symbols}

    return ServiceDefinition(
        name="indicator",
        consumers=[Consumer.of_batches(SUBJECT, DURABLE, on_candles, parse_candle)],
        partition_by_symbol=True,
        forget=forget,
    )
