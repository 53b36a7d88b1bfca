"""Live polling: shortly after every minute boundary, publish each symbol's newly closed candles.

Each poll asks Upbit for the forming candle plus every minute since the last published one
(``count`` 3..200) and publishes, in time order, only candles that are closed (``start + 60 s <=
now``) and newer than the last published: each candle once (``Nats-Msg-Id`` =
``candle:1m:<SYM>:<start>`` also drops a re-publish after a restart). A symbol that fails is
logged and retried at the next minute; the others go on. If a symbol fell more than 199 minutes
behind, the hole is stored by the backfill (not published) and polling resumes after it; the
indicator sees the jump and warms from ``market_data``.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from datetime import datetime, timedelta

from coinpilot.bus import LIVE_RUN, Bus
from coinpilot.clock import floor_minute
from coinpilot.db import Database
from services.collector import core, metrics
from services.collector.backfill import backfill_range
from services.collector.clock import Clock
from services.collector.upbit import UpbitClient

log = logging.getLogger("coinpilot.collector.poller")
MINUTE = timedelta(minutes=1)


async def poll_symbol(
    client: UpbitClient, bus: Bus, db: Database | None, symbol: str, last: datetime | None, now: datetime
) -> datetime | None:
    """Publish the symbol's closed candles newer than ``last``; returns the new last published start."""
    count = core.poll_count(now, last)
    if last is not None and db is not None and now - last > (core.MAX_COUNT - 1) * MINUTE:
        hole = await backfill_range(client, db, symbol, start=last, now=now)
        log.warning(
            "%s was %s behind: stored %d candles without publishing", symbol, now - last, hole.written
        )
        return hole.newest or last
    candles = await client.minute_candles(symbol, count)
    for candle in core.closed_after(candles, now, last):
        await bus.publish(candle, run_id=LIVE_RUN)
        metrics.CANDLES_PUBLISHED.labels(symbol).inc()
        last = candle.ts_open
    return last


async def poll_once(
    client: UpbitClient,
    bus: Bus,
    db: Database | None,
    symbols: Sequence[str],
    last: MutableMapping[str, datetime | None],
    now: datetime,
) -> None:
    """One round over every symbol, in order, each isolated from the others' failures."""
    for symbol in symbols:
        try:
            last[symbol] = await poll_symbol(client, bus, db, symbol, last.get(symbol), now)
        except Exception as exc:  # one symbol's failure, whatever it is, never stops the others
            metrics.FAILURES.labels(symbol, "poll", type(exc).__name__).inc()
            log.error("poll of %s failed: %s: %s", symbol, type(exc).__name__, exc)


def next_poll_time(now: datetime, offset: timedelta) -> datetime:
    """The next minute boundary plus ``offset`` (Upbit needs a moment to finalise the candle)."""
    candidate = floor_minute(now) + offset
    return candidate if candidate > now else candidate + MINUTE


async def poll_forever(
    client: UpbitClient,
    bus: Bus,
    db: Database | None,
    symbols: Sequence[str],
    last: MutableMapping[str, datetime | None],
    clock: Clock,
    *,
    offset: timedelta = timedelta(seconds=2),
) -> None:
    while True:
        now = clock.now()
        await clock.sleep((next_poll_time(now, offset) - now).total_seconds())
        await poll_once(client, bus, db, symbols, last, clock.now())
