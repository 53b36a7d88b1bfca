"""Upbit quotation client for ``GET /v1/candles/minutes/1``: throttled, retried, strict about payloads.

    request ── 2xx ──────────────► parse (malformed -> PermanentError, no retry)
       │    ── 429 ──────────────► RateLimitedError: wait Retry-After, else backoff; retry
       │    ── 5xx / timeout / network ► TransientError: backoff with jitter; retry
       │    ── other 4xx ────────► PermanentError (the request itself is wrong)
       └── after ``max_attempts`` the last TransientError is raised to the caller

Throttle: at most ``max_requests_per_second`` (default 8, Upbit allows 10 per IP for the candle
group) request starts per second across all symbols, and when the ``Remaining-Req`` header
(``group=candles; min=..; sec=..``) says the second's budget is spent, nothing is sent until the
next second. Every request is timed in ``coinpilot_upbit_request_seconds{endpoint,status}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from coinpilot.contracts import MinuteCandle
from coinpilot.errors import PermanentError, RateLimitedError, TransientError
from services.collector import metrics
from services.collector.clock import Clock, SystemClock
from services.collector.core import MAX_COUNT, decode_json, format_to, parse_candles

log = logging.getLogger("coinpilot.collector.upbit")

MINUTE_CANDLES = "/v1/candles/minutes/1"
DEFAULT_BASE_URL = "https://api.upbit.com"


@dataclass(frozen=True, slots=True)
class RemainingReq:
    group: str
    minute: int | None
    second: int | None


def parse_remaining_req(value: str | None) -> RemainingReq | None:
    """``group=candles; min=1800; sec=9`` -> RemainingReq; None when absent or unreadable."""
    if not value:
        return None
    parts: dict[str, str] = {}
    for item in value.split(";"):
        key, sep, raw = item.strip().partition("=")
        if sep:
            parts[key.strip()] = raw.strip()

    def number(key: str) -> int | None:
        try:
            return int(parts[key])
        except (KeyError, ValueError):
            return None

    return RemainingReq(parts.get("group", ""), number("min"), number("sec"))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form); None when absent or not a number."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class RateLimiter:
    """Spaces request starts at least ``1 / per_second`` apart; ``hold_until`` pauses everything."""

    def __init__(self, clock: Clock, per_second: float) -> None:
        if not 0 < per_second <= 10:
            raise ValueError("per_second must be in (0, 10]: Upbit allows 10 candle requests per second")
        self._clock = clock
        self._interval = 1.0 / per_second
        self._next = float("-inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            wait = self._next - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            self._next = max(self._clock.monotonic(), self._next) + self._interval

    def hold_until(self, monotonic_time: float) -> None:
        self._next = max(self._next, monotonic_time)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 0.5
    cap_seconds: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half the step fixed, half random."""
        step = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        return step / 2 + rng.uniform(0, step / 2)


class UpbitClient:
    """Async client of Upbit's public candle endpoint (no API key: quotation API)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        clock: Clock | None = None,
        timeout_seconds: float = 5.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float = 8.0,
        rng: random.Random | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(self.clock, max_requests_per_second)
        self._rng = rng or random.Random()
        self._http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout_seconds, headers={"Accept": "application/json"}
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def minute_candles(self, market: str, count: int, to: datetime | None = None) -> list[MinuteCandle]:
        """Up to ``count`` 1m candles of ``market`` opened before ``to`` (exclusive; None = now),
        oldest first. The newest may still be forming: the caller decides what is closed."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be in [1, {MAX_COUNT}], got {count}")
        params: dict[str, Any] = {"market": market, "count": count}
        if to is not None:
            params["to"] = format_to(to)
        attempt = 0
        while True:
            attempt += 1
            try:
                body = await self._get(MINUTE_CANDLES, params)
                return parse_candles(decode_json(body), market)
            except RateLimitedError as exc:
                if attempt >= self.retry.max_attempts:
                    raise
                wait = (
                    exc.retry_after if exc.retry_after is not None else self.retry.delay(attempt, self._rng)
                )
                self._back_off(market, "rate_limited", wait, attempt, exc)
                await self.clock.sleep(wait)
            except TransientError as exc:
                if attempt >= self.retry.max_attempts:
                    raise
                wait = self.retry.delay(attempt, self._rng)
                self._back_off(market, "transient", wait, attempt, exc)
                await self.clock.sleep(wait)

    def _back_off(self, market: str, reason: str, wait: float, attempt: int, exc: Exception) -> None:
        metrics.UPBIT_RETRIES.labels(reason).inc()
        self.limiter.hold_until(self.clock.monotonic() + wait)
        log.warning(
            "Upbit %s for %s (attempt %d/%d), retrying in %.2fs: %s",
            reason,
            market,
            attempt,
            self.retry.max_attempts,
            wait,
            exc,
        )

    async def _get(self, path: str, params: dict[str, Any]) -> bytes:
        await self.limiter.acquire()
        started = self.clock.monotonic()
        status = "error"
        try:
            response = await self._http.get(path, params=params)
            status = str(response.status_code)
        except httpx.TimeoutException as exc:
            status = "timeout"
            raise TransientError(f"Upbit {path} timed out: {type(exc).__name__}") from exc
        except httpx.RequestError as exc:
            status = "network"
            raise TransientError(f"Upbit {path} unreachable: {type(exc).__name__}: {exc}") from exc
        finally:
            metrics.UPBIT_REQUEST_SECONDS.labels(path, status).observe(
                max(0.0, self.clock.monotonic() - started)
            )
        self._honour_remaining(response.headers.get("Remaining-Req"))
        code = response.status_code
        if code == 429:
            raise RateLimitedError(
                f"Upbit {path} answered 429 (rate limited)",
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if code >= 500:
            raise TransientError(f"Upbit {path} answered {code}")
        if code >= 400:
            raise PermanentError(f"Upbit {path} answered {code}: {response.text[:200]}")
        return response.content

    def _honour_remaining(self, header: str | None) -> None:
        remaining = parse_remaining_req(header)
        if remaining is None:
            return
        now = self.clock.monotonic()
        if remaining.minute is not None and remaining.minute <= 0:
            self.limiter.hold_until(now + 60.0)
        elif remaining.second is not None and remaining.second <= 0:
            self.limiter.hold_until(now + 1.0)
