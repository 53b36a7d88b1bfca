"""Riding out a NATS restart: which errors mean "NATS is away, ask again", and the asking again.

A replay publishes and reads consumer state through one connection that nats-py reconnects by
itself (``max_reconnect_attempts=-1``); what fails meanwhile is the call in flight: a request that
times out, no responders while JetStream recovers its streams, a 503 from the JetStream API.
Asking again is safe: every candle carries a deterministic ``Nats-Msg-Id``, so a publish whose
ack was lost is stored once, and a drain check only reads. A refusal (no permission, payload too
large, no such stream) is not an outage and is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats import errors as nats_errors
from nats.js import errors as js_errors

from coinpilot.errors import TransientError

log = logging.getLogger("coinpilot.replay")

T = TypeVar("T")

#: What a call sees while the server is down, restarting or recovering JetStream.
AWAY: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one, and so is a publish ack never answered
    nats_errors.NoRespondersError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.ConnectionClosedError,
    nats_errors.StaleConnectionError,
    nats_errors.UnexpectedEOF,
    nats_errors.OutboundBufferLimitError,
    nats_errors.NoServersError,
    js_errors.ServiceUnavailableError,
    js_errors.NoStreamResponseError,
    ConnectionError,
)

FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0


def nats_away(exc: BaseException) -> bool:
    """True when ``exc`` (or the NATS error a ``TransientError`` wraps) means NATS is unavailable."""
    if isinstance(exc, TransientError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, AWAY)


def next_pause(previous: float) -> float:
    """Doubling pauses between attempts, from 50 ms up to 1 s (NATS reconnects every second)."""
    return min(MAX_PAUSE, max(FIRST_PAUSE, previous * 2))


async def ride_out(what: str, call: Callable[[], Awaitable[T]], *, outage_timeout: float) -> T:
    """Await ``call()``, asking again while NATS is away; give up after ``outage_timeout`` seconds."""
    started: float | None = None
    pause = 0.0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not nats_away(exc):
                raise
            now = time.perf_counter()
            if started is None:
                started = now
                log.warning("%s: NATS unavailable (%s: %s); retrying", what, type(exc).__name__, exc)
            elif now - started > outage_timeout:
                raise TransientError(f"{what}: NATS unavailable for over {outage_timeout:.0f}s") from exc
            pause = next_pause(pause)
            await asyncio.sleep(pause)
