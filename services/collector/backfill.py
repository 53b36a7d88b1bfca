"""Startup backfill: page backwards from now, 200 candles at a time, into ``market_data``.

Pages end at the oldest candle of the previous page (``to`` is exclusive, so nothing repeats);
only closed candles opened after the start (``core.backfill_start``) are kept; each page is
written in one COPY + upsert transaction, so an interrupted backfill keeps what it had and a
re-run writes nothing twice. Minutes Upbit has no candle for stay missing: a gap stays a gap.
Nothing is published: the indicator warms its windows from ``market_data``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from coinpilot.db import Database
from services.collector import core, metrics, state
from services.collector.upbit import UpbitClient

log = logging.getLogger("coinpilot.collector.backfill")


@dataclass(frozen=True, slots=True)
class BackfillResult:
    symbol: str
    start: datetime | None = None
    pages: int = 0
    fetched: int = 0
    written: int = 0
    newest: datetime | None = None
    error: str | None = None


async def backfill_range(
    client: UpbitClient, db: Database, symbol: str, *, start: datetime, now: datetime
) -> BackfillResult:
    """Fetch and store every closed candle of ``symbol`` opened in ``(start, now)``."""
    to: datetime | None = now
    pages = fetched = written = 0
    newest: datetime | None = None
    while to is not None:
        candles = await client.minute_candles(symbol, core.MAX_COUNT, to=to)
        page = core.page_outcome(candles, core.MAX_COUNT, start=start, now=now)
        pages += 1
        fetched += len(page.keep)
        if page.keep:
            written += await state.store_candles(db, page.keep)
            newest = max(newest or page.keep[-1].ts_open, page.keep[-1].ts_open)
        to = page.next_to
    metrics.CANDLES_BACKFILLED.labels(symbol).inc(written)
    return BackfillResult(symbol, start, pages, fetched, written, newest)


async def backfill_symbol(
    client: UpbitClient, db: Database, symbol: str, *, now: datetime, lookback: timedelta
) -> BackfillResult:
    """Backfill one symbol from its newest stored candle (or ``lookback`` when history is short)."""
    stored = await state.stored_range(db, symbol)
    start = core.backfill_start(stored, now, lookback)
    result = await backfill_range(client, db, symbol, start=start, now=now)
    newest = max((t for t in (stored.last, result.newest) if t is not None), default=None)
    return BackfillResult(symbol, start, result.pages, result.fetched, result.written, newest)


async def take_symbol(
    client: UpbitClient, db: Database, symbol: str, *, now: datetime, lookback: timedelta
) -> datetime | None:
    """Backfill a symbol whose partition this replica just took (``core.take_plan``: as at
    start-up, but only up to a recent newest candle); returns where its polling resumes."""
    stored = await state.stored_range(db, symbol)
    plan = core.take_plan(stored, now, lookback)
    newest = stored.last
    if plan.start is not None:
        result = await backfill_range(client, db, symbol, start=plan.start, now=plan.until)
        log.info("took %s: backfilled after %s, %d written", symbol, plan.start, result.written)
        newest = max((t for t in (newest, result.newest) if t is not None), default=None)
    return plan.resume if plan.resume is not None else newest


async def backfill_all(
    client: UpbitClient, db: Database, symbols: Sequence[str], *, now: datetime, lookback: timedelta
) -> dict[str, BackfillResult]:
    """Backfill every symbol in turn; one symbol's failure is logged and never stops the others."""
    results: dict[str, BackfillResult] = {}
    for symbol in symbols:
        try:
            result = await backfill_symbol(client, db, symbol, now=now, lookback=lookback)
        except Exception as exc:  # one symbol's failure, whatever it is, never stops the others
            metrics.FAILURES.labels(symbol, "backfill", type(exc).__name__).inc()
            log.error("backfill of %s failed: %s: %s", symbol, type(exc).__name__, exc)
            stored = await newest_stored(db, symbol)
            results[symbol] = BackfillResult(symbol, newest=stored, error=f"{type(exc).__name__}: {exc}")
            continue
        log.info(
            "backfilled %s after %s: %d pages, %d closed candles, %d written",
            symbol,
            result.start,
            result.pages,
            result.fetched,
            result.written,
        )
        results[symbol] = result
    return results


async def newest_stored(db: Database, symbol: str) -> datetime | None:
    """The newest stored candle of ``symbol``, or None (also when PostgreSQL does not answer)."""
    try:
        return (await state.stored_range(db, symbol)).last
    except Exception:
        return None
