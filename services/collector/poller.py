"""Live polling: shortly after every minute boundary, publish each symbol's newly closed candles.

Each poll asks Upbit for the forming candle plus every minute since the last published one
(``count`` 3..200) and publishes, in time order, only candles that are closed (``start + 60 s <=
now``) and newer than the last published: each candle once (``Nats-Msg-Id`` =
``candle:1m:<SYM>:<start>`` also drops a re-publish after a restart). A symbol that fails is
logged and retried at the next minute; the others go on. If a symbol fell more than 199 minutes
behind, the hole is stored by the backfill (not published) and polling resumes after it; the
indicator sees the jump and warms from ``market_data``.

Partitioned (``COINPILOT_PARTITIONS`` > 1), ``poll_owned`` polls only the symbols of the
partitions this replica owns now (``coinpilot.runtime.OwnedSymbols``): a symbol taken is
backfilled and resumed (``backfill.take_symbol``, ``core.take_plan``) and polled at once; one
given up is dropped before its next request or publish. Two replicas polling a symbol during a
handover publish each minute once all the same: JetStream drops the second copy by its
``Nats-Msg-Id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime, timedelta

from coinpilot.bus import LIVE_RUN, Bus
from coinpilot.clock import floor_minute
from coinpilot.db import Database
from coinpilot.runtime.owned import OwnedSymbols, ownership_change
from services.collector import core, metrics
from services.collector.backfill import backfill_range, newest_stored, take_symbol
from services.collector.clock import Clock
from services.collector.upbit import UpbitClient

log = logging.getLogger("coinpilot.collector.poller")
MINUTE = timedelta(minutes=1)


Owns = Callable[[str], bool]


async def poll_symbol(
    client: UpbitClient,
    bus: Bus,
    db: Database | None,
    symbol: str,
    last: datetime | None,
    now: datetime,
    owns: Owns | None = None,
) -> datetime | None:
    """Publish the symbol's closed candles newer than ``last``; returns the new last published
    start. ``owns``: whether this replica still polls the symbol, asked before each publish."""
    count = core.poll_count(now, last)
    if last is not None and db is not None and now - last > (core.MAX_COUNT - 1) * MINUTE:
        hole = await backfill_range(client, db, symbol, start=last, now=now)
        log.warning(
            "%s was %s behind: stored %d candles without publishing", symbol, now - last, hole.written
        )
        return hole.newest or last
    candles = await client.minute_candles(symbol, count)
    for candle in core.closed_after(candles, now, last):
        if owns is not None and not owns(symbol):
            break  # given up meanwhile: its new owner publishes the rest
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
    owns: Owns | None = None,
) -> None:
    """One round over every symbol, in order, each isolated from the others' failures;
    ``owns``: skip (or stop publishing) a symbol this replica no longer polls."""
    for symbol in symbols:
        if owns is not None and not owns(symbol):
            continue
        try:
            last[symbol] = await poll_symbol(client, bus, db, symbol, last.get(symbol), now, owns)
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


async def poll_owned(
    client: UpbitClient,
    bus: Bus,
    db: Database,
    symbols: Sequence[str],
    owned: OwnedSymbols,
    clock: Clock,
    *,
    lookback: timedelta,
    offset: timedelta = timedelta(seconds=2),
) -> None:
    """Poll the owned symbols every minute, as ``poll_forever``; take and give up symbols as the
    partitions move (``symbols``: the settings' list, the polling order)."""
    last: dict[str, datetime | None] = {}
    due: datetime | None = None
    while True:
        change = owned.next_change()
        taken, given_up = ownership_change(last, owned.symbols, symbols)
        for symbol in given_up:
            del last[symbol]
        if given_up:
            log.info("stopped polling %s (partition given up)", ", ".join(given_up))
        if taken:
            await _take(client, db, taken, owned, last, clock, lookback)
            await poll_once(client, bus, db, taken, last, clock.now(), owned.__contains__)
            continue  # ownership may have moved meanwhile
        now = clock.now()
        due = due or next_poll_time(now, offset)
        if now < due and not await _sleep_unless(clock, (due - now).total_seconds(), change):
            continue  # woken by a partition moving
        followed = [s for s in symbols if s in last]
        await poll_once(client, bus, db, followed, last, clock.now(), owned.__contains__)
        due = None


async def _take(
    client: UpbitClient,
    db: Database,
    taken: Sequence[str],
    owned: OwnedSymbols,
    last: dict[str, datetime | None],
    clock: Clock,
    lookback: timedelta,
) -> None:
    """Backfill and resume each taken symbol still owned (one's failure never stops the others)."""
    for symbol in taken:
        if symbol not in owned:
            continue
        try:
            last[symbol] = await take_symbol(client, db, symbol, now=clock.now(), lookback=lookback)
        except Exception as exc:  # as at start-up: poll from the newest stored candle
            metrics.FAILURES.labels(symbol, "backfill", type(exc).__name__).inc()
            log.error("backfill of taken %s failed: %s: %s", symbol, type(exc).__name__, exc)
            last[symbol] = await newest_stored(db, symbol)
        log.info("polling %s (partition taken) after %s", symbol, last[symbol])


async def _sleep_unless(clock: Clock, seconds: float, change: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``change`` is set first; True when the sleep ran out."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(change.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            task.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
    return sleeper.done() and not sleeper.cancelled()
