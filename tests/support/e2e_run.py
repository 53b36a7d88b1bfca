"""What every lockstep e2e test does before its services start: the backtest's fills over the
window (what the services must book), ``market_data`` warmed with the candles before it, the
streams in place, and the DLQ's count (which must not grow)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from apps.backtest.report import BacktestReport
from apps.backtest.run import Window, run_backtest
from coinpilot.bus import ensure_streams
from coinpilot.contracts import Fill, MinuteCandle
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles


@dataclass
class PreparedRun:
    run_id: str
    expected: list[Fill]
    """The backtest's fills in (event time, symbol) order."""
    report: BacktestReport
    nc: Client
    js: JetStreamContext
    dlq_before: int


async def prepare_run(
    prefix: str,
    warm: Sequence[MinuteCandle],
    replay: Sequence[MinuteCandle],
    nats_url: str | list[str],
    pg_url: str,
    replicas: int | None = None,
) -> PreparedRun:
    """The expected ledger of ``replay`` after ``warm``, the database warmed, a NATS client (the
    caller closes ``nc``; a list of URLs: a cluster's nodes, reconnecting for ever) with the
    streams ensured (with ``replicas`` copies)."""
    run_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    backtest, report = await run_backtest(Window(list(warm), list(replay)), run_id=run_id)
    expected = sorted(backtest.fills, key=lambda f: (f.ts_event, f.symbol))
    await upgrade(pg_url)
    db = Database(pg_url)
    try:
        await copy_candles(db, warm)
    finally:
        await db.dispose()
    cluster = isinstance(nats_url, list)
    nc = await nats.connect(
        nats_url, **({"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5} if cluster else {})
    )
    js = nc.jetstream()
    await ensure_streams(js, replicas=replicas)
    dlq = (await js.stream_info("DLQ")).state.messages
    return PreparedRun(run_id, expected, report, nc, js, dlq)
