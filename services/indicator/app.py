"""Composition root of the indicator: config from the strategy YAML, the candle handler, one consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.indicator.handlers import CandleHandler
from services.indicator.settings import IndicatorSettings, load_config

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
        rt.db,
        rt.cache,
        config,
        regime_ttl_seconds=regime_ttl,
        keep_outputs=settings.recent_outputs_per_symbol,
        log=rt.log,
        gauge_run_id=rt.settings.run_id,
    )
    # FastStream hands a fetched batch to concurrent tasks (started in stream order). The state is
    # per symbol and ordered, so candles are handled one at a time, and their outputs published
    # here, before the next candle, so snapshots leave in candle order too (then the runtime acks).
    in_order = asyncio.Lock()

    async def on_candle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        async with in_order:
            out = await handler.handle(d.message, d.run_id)
            await rt.bus.publish_all(out, run_id=d.run_id, trace_id=d.trace_id)
        return ()

    return ServiceDefinition(
        name="indicator",
        consumers=[
            Consumer(subject=SUBJECT, durable=DURABLE, handler=on_candle, parse=parser_for(MinuteCandle))
        ],
    )
