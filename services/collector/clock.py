"""The collector's wall-clock seam: the only place it reads real time or waits.

The collector is an edge (it decides "is this candle closed?" from the wall clock, sleeps until
the next minute, backs off from Upbit), so its time is injected: ``SystemClock`` in production,
a manual clock in tests, which makes the minute-aligned poller and the backoff run instantly.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Protocol

from coinpilot.clock import wall_clock_now


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for rate limits and backoff)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return wall_clock_now()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
