"""A 60-second PostgreSQL outage and a 60-second Redis outage mid-replay change nothing (issue 19).

The seven services run as processes (as in ``test_parity``) and reach PostgreSQL and Redis through
loopback proxies (``tests/support/proxy.py``) that refuse connections and cut the open ones for
the length of an outage, then let the same address through again, data intact. During a lockstep
replay of six hours of the bundled sample:

* PostgreSQL goes away the moment the first exit signal is on the bus, so the exit is in flight
  (risk is deciding it) when the database goes; whatever needs the database waits in place
  (``TransientError``) and the lockstep replay stalls until the database is back;
* Redis goes away a few minutes (event time) before the next BUY, so that BUY is sized by risk
  while Redis is down (from its mirror of what Redis holds, never a default) and reviewed by the
  agent once its guardrail keys can be read.

Then the ledger equals the backtest's, byte for byte, ``market_data`` holds every replayed candle
exactly as published, and nothing was dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nats
import pytest

from apps.demo import sample_files, start_services, stop_services, wait_ready
from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle, Side
from coinpilot.db import Database
from coinpilot.db.market import candle_row, load_rows
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from tests.e2e.test_parity import canonical, distributed_ledger
from tests.support.e2e_run import prepare_run
from tests.support.proxy import TcpProxy

# Two minutes of the run are the outages themselves; on a busy 2-core machine start-up and the
# replay around them can take as long again, past the suite's 300 s default.
pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(600),
]

REPLAY_FROM = datetime(2023, 3, 26, 6, 0, tzinfo=UTC)
REPLAY_HOURS = 6
"""Six hours of the sample that trade two round trips (BTC and ETH), with an exit between two
BUYs: short enough for two one-minute outages to fit in the test's five minutes."""
OUTAGE_SECONDS = 60.0
REDIS_LEAD = timedelta(minutes=10)
"""Redis goes away this long (event time) before the BUY it must not change."""


def split_window(candles: Sequence[MinuteCandle]) -> tuple[list[MinuteCandle], list[MinuteCandle]]:
    """Everything before :data:`REPLAY_FROM` warms the database; the next hours are replayed."""
    end = REPLAY_FROM + timedelta(hours=REPLAY_HOURS)
    return [c for c in candles if c.ts_open < REPLAY_FROM], [
        c for c in candles if REPLAY_FROM <= c.ts_open < end
    ]


def through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def proxy_for(url: str) -> TcpProxy:
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0).start()


@dataclass
class Outage:
    """One outage of ``OUTAGE_SECONDS`` behind ``proxy``, started once."""

    name: str
    proxy: TcpProxy
    task: asyncio.Task[None] | None = None
    began: float = 0.0
    ended: float = 0.0
    log: list[str] = field(default_factory=list)

    def begin(self, why: str) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(why))

    async def _run(self, why: str) -> None:
        self.proxy.refuse()
        self.began = time.monotonic()
        self.log.append(f"{self.name} down: {why}")
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a condition
        self.proxy.restore()
        self.ended = time.monotonic()

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()


async def test_postgres_and_redis_outages_mid_replay_change_nothing(
    nats_url: str, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    warm, replay = split_window(load_candles(sample_files()))
    prepared = await prepare_run("outages", warm, replay, nats_url, pg_url)
    run_id, expected, report = prepared.run_id, prepared.expected, prepared.report
    nc, js, dlq_before = prepared.nc, prepared.js, prepared.dlq_before
    assert len(report.trips) >= 2, "the window must trade at least two round trips"
    first_sell = next(f for f in expected if f.side is Side.SELL)
    next_buy = next(f for f in expected if f.side is Side.BUY and f.ts_event > first_sell.ts_event)
    redis_at = next(i for i, c in enumerate(replay) if c.ts_event >= next_buy.ts_event - REDIS_LEAD)

    pg = Outage("postgresql", proxy_for(pg_url))
    cache = Outage("redis", proxy_for(redis_url))
    stack = EmbeddedStack(
        tmp_path,
        nats_url=nats_url,
        database_url=through(pg_url, pg.proxy),
        redis_url=through(redis_url, cache.proxy),
    )
    services = start_services(stack, tmp_path)

    async def on_exit_signal(msg) -> None:  # type: ignore[no-untyped-def]
        if msg.subject == f"signals.exit.{first_sell.symbol}":  # not a start-up permission probe
            pg.begin(f"exit signal on {msg.subject}")

    def progress(done: int, total: int) -> None:
        if done >= redis_at and pg.done:
            cache.begin(f"{done}/{total} candles replayed")

    watch = await nc.subscribe("signals.exit.*", cb=on_exit_signal)
    try:
        await wait_ready(services)
        assert pg.proxy.accepted > 0 and cache.proxy.accepted > 0, "the services connect through the proxies"
        await replay_candles(
            js,
            replay,
            run_id=run_id,
            pace=parse_pace("lockstep"),
            drain_timeout=OUTAGE_SECONDS * 3,
            progress=progress,
        )
        for outage in (pg, cache):
            assert outage.task is not None, f"the {outage.name} outage never began"
            await outage.task
    finally:
        await watch.unsubscribe()
        stop_services(services)
        await nc.close()
        pg.proxy.close()
        cache.proxy.close()

    assert pg.ended <= cache.began, (pg.log, cache.log)
    booked = await distributed_ledger(pg_url, run_id)
    assert [canonical(f) for f in booked] == [canonical(f) for f in expected]

    db = Database(pg_url)
    try:
        async with db.session() as session:
            for symbol in sorted({c.symbol for c in replay}):
                published = [candle_row(c) for c in replay if c.symbol == symbol]
                stored = await load_rows(
                    session, symbol, published[0].timestamp, published[-1].timestamp + timedelta(minutes=1)
                )
                assert stored == published, symbol
    finally:
        await db.dispose()

    nc = await nats.connect(nats_url)
    try:
        assert (await nc.jetstream().stream_info("DLQ")).state.messages == dlq_before
    finally:
        await nc.close()
