"""Composition root of the collector: the recorder consumer and the Upbit backfill + poll task.

Partitioned (``COINPILOT_PARTITIONS`` > 1) the recorder runs per partition like the indicator's
consumer and the task polls only the owned partitions' symbols (``poller.poll_owned``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from coinpilot.bus import LIVE_RUN
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.market_checks import CandleGate, CandleRule, CandleSettings, parse_candle, refuse
from coinpilot.runtime import Consumer, Delivery, OwnedSymbols, Runtime, ServiceDefinition
from services.collector import metrics, state
from services.collector.backfill import backfill_all
from services.collector.clock import Clock, SystemClock
from services.collector.poller import poll_forever, poll_owned
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


async def collect_owned(
    rt: Runtime,
    db: Database,
    settings: CollectorSettings,
    clock: Clock,
    symbols: Sequence[str],
    owned: OwnedSymbols,
) -> None:
    """Poll the symbols of the partitions this replica owns, following them as they move."""
    client = make_client(settings, clock)
    try:
        await poll_owned(
            client, rt.bus, db, symbols, owned, clock, lookback=settings.lookback, offset=settings.poll_offset
        )
    finally:
        await client.close()


def build(
    rt: Runtime, settings: CollectorSettings | None = None, *, clock: Clock | None = None
) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("the collector needs PostgreSQL (COINPILOT_DATABASE_URL): it owns market_data")
    db = rt.db
    settings = settings or CollectorSettings()
    wall = clock or SystemClock()
    symbols = rt.settings.symbols

    gate = CandleGate(CandleSettings().limits(), LIVE_RUN)

    async def on_candles(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        """Check a fetched run of candles, then insert it in one statement. A candle that breaks
        a rule, or a stored minute with other values, is refused (dead-lettered and alerted); in
        a run, that makes the runtime handle its candles again one at a time."""
        ahead = gate.admit([(d.subject, d.message, d.run_id) for d in ds], wall_clock_now())
        recorded = await state.record_candles(db, [d.message for d in ds])
        if recorded.conflicts:
            i, stored = min(recorded.conflicts.items())
            candle = ds[i].message
            raise refuse(
                candle,
                ds[i].subject,
                CandleRule.CONFLICTING_REPUBLISH,
                f"{candle.ts_open:%Y-%m-%dT%H:%M}Z is recorded as o={stored.open_price} "
                f"h={stored.high_price} l={stored.low_price} c={stored.close_price} v={stored.volume}; "
                "this one is "
                f"o={candle.open} h={candle.high} l={candle.low} c={candle.close} v={candle.volume}",
            )
        gate.commit(ahead)
        metrics.CANDLES_RECORDED.labels("written").inc(recorded.written)
        metrics.CANDLES_RECORDED.labels("unchanged").inc(len(ds) - recorded.written)
        return [() for _ in ds]

    async def run_collector(rt: Runtime) -> None:
        if rt.owned is None:
            await collect(rt, db, settings, wall, symbols)
        else:  # partitioned: the host set the owned symbols before starting this task
            await collect_owned(rt, db, settings, wall, symbols, rt.owned)

    def forget(given: frozenset[str]) -> None:
        """A partition given up or taken (COINPILOT_PARTITIONS > 1): drop its symbols' candle
        tracks; the next candle of a symbol is checked against the clock only, as after a start."""
        gate.tracks = {k: v for k, v in gate.tracks.items() if k[1] not in given}

    return ServiceDefinition(
        name="collector",
        consumers=[Consumer.of_batches(SUBJECT, DURABLE, on_candles, parse_candle)],
        tasks=[run_collector] if settings.upbit_enabled else [],
        partition_by_symbol=True,
        forget=forget,
    )
