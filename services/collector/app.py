"""Composition root of the collector: the recorder consumer and the Upbit backfill + poll task."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.collector import metrics, state
from services.collector.backfill import backfill_all
from services.collector.clock import Clock, SystemClock
from services.collector.poller import poll_forever
from services.collector.settings import CollectorSettings
from services.collector.upbit import UpbitClient

SUBJECT = "candles.1m.*"
DURABLE = "collector-recorder"


def make_client(settings: CollectorSettings, clock: Clock) -> UpbitClient:
    return UpbitClient(
        settings.upbit_base_url,
        clock=clock,
        timeout_seconds=settings.timeout_seconds,
        retry=settings.retry(),
        max_requests_per_second=settings.max_requests_per_second,
    )


async def collect(
    rt: Runtime, db: Database, settings: CollectorSettings, clock: Clock, symbols: Sequence[str]
) -> None:
    """Backfill every symbol, then poll forever (the runtime restarts this task if it crashes)."""
    client = make_client(settings, clock)
    try:
        results = await backfill_all(client, db, symbols, now=clock.now(), lookback=settings.lookback)
        last: dict[str, datetime | None] = {s: r.newest for s, r in results.items()}
        await poll_forever(client, rt.bus, db, symbols, last, clock, offset=settings.poll_offset)
    finally:
        await client.close()


def build(rt: Runtime, *, clock: Clock | None = None) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("the collector needs PostgreSQL (COINPILOT_DATABASE_URL): it owns market_data")
    db = rt.db
    settings = CollectorSettings()
    wall = clock or SystemClock()
    symbols = rt.settings.symbols

    async def on_candles(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        """Record a fetched run of candles in one statement (stream order: a correction wins)."""
        written = await state.record_candles(db, [d.message for d in ds])
        metrics.CANDLES_RECORDED.labels("written").inc(written)
        metrics.CANDLES_RECORDED.labels("unchanged").inc(len(ds) - written)
        return [() for _ in ds]

    async def run_collector(rt: Runtime) -> None:
        await collect(rt, db, settings, wall, symbols)

    return ServiceDefinition(
        name="collector",
        consumers=[Consumer.of_batches(SUBJECT, DURABLE, on_candles, parser_for(MinuteCandle))],
        tasks=[run_collector] if settings.upbit_enabled else [],
    )
