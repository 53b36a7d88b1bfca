"""Publish candles timestamp by timestamp; in lockstep wait for every durable consumer to drain.

Drained means: every durable consumer of every stream has nothing pending and nothing awaiting
an ack. Services publish their outputs before they ack their input, so when nothing is pending
anywhere, every consequence of the last candle has been handled.

Lockstep goes one candle at a time in (time, symbol) order, draining after each, so every
candle's whole chain (down to the fill and the risk state it changes) has settled before the
next candle, even the next symbol's candle of the same minute: risk sizes an ETH entry on the
ledger after BTC's fill of that minute, never on a race with it. The in-process backtest walks
the candles in the same order, which is what makes the two reach the same ledger.

A NATS restart mid-replay is ridden out (``outage.py``): a publish or a drain check that fails
because NATS is away is asked again until it answers, and a publish whose ack was lost is stored
once thanks to the candle's Nats-Msg-Id, so the replay resumes where it was, without duplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from nats.js import JetStreamContext

from coinpilot.bus import Bus
from coinpilot.contracts import MinuteCandle
from coinpilot.replay.outage import ride_out
from coinpilot.replay.pacing import Pace

Progress = Callable[[int, int], None]
MAX_PACE_WINDOW = 256  # candles in flight at pace max (the stream stores them in order)
OUTAGE_TIMEOUT = 300.0  # seconds NATS may stay away before a replay gives up


@dataclass
class ReplayResult:
    run_id: str
    candles: int = 0
    timestamps: int = 0
    seconds: float = 0.0
    drain_waits: list[float] = field(default_factory=list)

    @property
    def candles_per_second(self) -> float:
        return self.candles / self.seconds if self.seconds else 0.0


async def _last_sequences(js: JetStreamContext) -> dict[str, int]:
    return {s.config.name: s.state.last_seq for s in await js.streams_info()}


async def pipeline_backlog(js: JetStreamContext) -> int:
    """Messages pending or awaiting an ack across every durable consumer.

    Consumers are read one stream after another, so a handler may publish into a stream already
    read as empty; a reading only counts as zero when no stream's last sequence moved meanwhile.
    """
    before = await _last_sequences(js)
    backlog = 0
    for infos in await asyncio.gather(*(js.consumers_info(name) for name in before)):
        for info in infos:
            if not info.config.durable_name:
                continue  # ephemeral readers (tail, tests) are not part of the pipeline
            backlog += (info.num_pending or 0) + (info.num_ack_pending or 0)
    if backlog == 0 and await _last_sequences(js) != before:
        return 1
    return backlog


SHORT_POLL_MAX = 0.02  # a small backlog (lockstep) is read at least this often
LONG_POLL_MAX = 0.25
SECONDS_PER_MESSAGE = 20e-6  # a backlog is cleared no faster than ~50,000 messages/s


def next_poll_delay(previous: float, backlog: int) -> float:
    """The wait before reading the backlog again.

    A small backlog is read again soon (1.5x the last wait, up to 20 ms), so a lockstep drain is
    noticed within a few ms. A large one is read again in proportion to its size (up to 0.25 s):
    it cannot be gone sooner, and every reading asks the server about every consumer, work that
    competes with the pipeline being measured (65 readings in a 2 s pace-max drain before).
    """
    return max(min(previous * 1.5, SHORT_POLL_MAX), min(backlog * SECONDS_PER_MESSAGE, LONG_POLL_MAX))


async def wait_drained(
    js: JetStreamContext,
    *,
    timeout: float = 120.0,
    poll: float = 0.001,
    outage_timeout: float = OUTAGE_TIMEOUT,
) -> float:
    """Wait until the pipeline has no backlog; returns the seconds waited (a NATS outage included)."""
    started = time.perf_counter()
    delay = poll / 1.5

    async def backlog() -> int:
        return await ride_out("drain check", lambda: pipeline_backlog(js), outage_timeout=outage_timeout)

    while (pending := await backlog()) > 0:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"pipeline not drained after {timeout:.0f}s")
        delay = next_poll_delay(delay, pending)
        await asyncio.sleep(delay)
    return time.perf_counter() - started


async def replay_candles(
    js: JetStreamContext,
    candles: Sequence[MinuteCandle],
    *,
    run_id: str,
    pace: Pace,
    drain_timeout: float = 120.0,
    progress: Progress | None = None,
    outage_timeout: float = OUTAGE_TIMEOUT,
) -> ReplayResult:
    """Publish ``candles`` (already in time order) grouped by open time, paced as asked."""
    bus = Bus(js, "replay")
    result = ReplayResult(run_id=run_id)
    started = time.perf_counter()
    previous = None
    unsent: list[MinuteCandle] = []  # pace max: candles written back to back, acks awaited per window

    async def send() -> None:
        items = [(c, run_id, None) for c in unsent]
        await ride_out("publish", lambda: bus.publish_batch(items), outage_timeout=outage_timeout)
        unsent.clear()

    async def drained() -> float:
        return await wait_drained(js, timeout=drain_timeout, outage_timeout=outage_timeout)

    for ts, group in groupby(candles, key=lambda c: c.ts_open):
        batch = sorted(group, key=lambda c: c.symbol)
        delay = pace.wall_delay(previous, ts)
        if delay:
            await asyncio.sleep(delay)
        if pace.mode == "lockstep":
            for candle in batch:
                await ride_out(
                    "publish", lambda c=candle: bus.publish(c, run_id=run_id), outage_timeout=outage_timeout
                )
                result.drain_waits.append(await drained())
        else:
            unsent.extend(batch)
            if pace.mode != "max" or len(unsent) >= MAX_PACE_WINDOW:
                await send()
        result.candles += len(batch)
        result.timestamps += 1
        if progress is not None:
            progress(result.candles, len(candles))
        previous = ts
    if unsent:
        await send()
    if pace.mode != "lockstep":
        await drained()
    result.seconds = time.perf_counter() - started
    return result
