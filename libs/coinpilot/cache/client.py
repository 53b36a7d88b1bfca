"""``Cache``: a thin redis.asyncio wrapper whose failure modes are explicit.

* Plain helpers (``get``, ``set``, ``get_json``, ``set_json``, ``incr_with_ttl``, ``ttl``,
  ``delete``) raise :class:`coinpilot.errors.TransientError` when Redis is unreachable or slow:
  the handler's message is retried later by the runtime.
* ``*_or_default`` reads return the caller's documented default instead, count
  ``coinpilot_cache_fallbacks_total{purpose}`` and log a WARNING: for values where acting on a
  safe default beats stopping (volatility multiplier 1.0, regime UNKNOWN...). See README.md.

Timeouts are short (0.5 s). The client retries a command once, at once, on a *connection* error
only (:func:`reconnect_once`): after Redis restarts, a pooled socket is dead and the first command
on it fails, and that one retry on a fresh connection makes the restart invisible. A timeout is
never retried and an outage costs at most two refused connects per call (microseconds on
loopback), not a storm of reconnects with backoff inside every handler.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coinpilot.cache.metrics import CACHE_FALLBACKS
from coinpilot.errors import TransientError

log = logging.getLogger("coinpilot.cache")

SOCKET_TIMEOUT_SECONDS = 0.5
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
"""What "Redis is unavailable" looks like from the client (refused, reset, timed out)."""

T = TypeVar("T")


def reconnect_once() -> Retry:
    """One immediate retry on ``ConnectionError`` (a dead pooled socket, refused connect), none on
    ``TimeoutError``: a restarted Redis is reached on the first call, a slow one costs one timeout."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class Cache:
    """Redis for values that can be rebuilt. ``client`` is the raw ``redis.asyncio.Redis``
    (``decode_responses=True``) for callers that need pipelines of their own."""

    def __init__(self, url: str, *, socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.client: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=reconnect_once(),
            health_check_interval=0,
        )

    async def get(self, key: str) -> str | None:
        return await self._call(f"GET {key}", lambda: self.client.get(key))

    async def set(self, key: str, value: str, ttl: int | None = None) -> None:
        """SET ``key``; ``ttl`` seconds (None: no expiry)."""
        await self._call(f"SET {key}", lambda: self.client.set(key, value, ex=ttl))

    async def get_json(self, key: str) -> Any | None:
        """The decoded JSON at ``key``; None when the key is missing."""
        raw = await self.get(key)
        return None if raw is None else json.loads(raw)

    async def set_json(self, key: str, value: Any, ttl: int | None = None) -> None:
        """SET ``key`` to ``value`` as JSON (``default=str`` covers Decimal and datetime)."""
        await self.set(key, json.dumps(value, default=str, separators=(",", ":")), ttl)

    async def incr_with_ttl(self, key: str, ttl: int) -> int:
        """INCR and EXPIRE in one MULTI/EXEC: the counter never exists without its TTL."""

        async def run() -> int:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, ttl)
                value, _ = await pipe.execute()
            return int(value)

        return await self._call(f"INCR {key}", run)

    async def ttl(self, key: str) -> int:
        """Seconds left on ``key``: ``-1`` when it has no expiry, ``-2`` when it does not exist."""
        return int(await self._call(f"TTL {key}", lambda: self.client.ttl(key)))

    async def delete(self, *keys: str) -> int:
        """DEL the keys; returns how many existed."""
        if not keys:
            return 0
        return int(await self._call(f"DEL {' '.join(keys)}", lambda: self.client.delete(*keys)))

    async def ping(self) -> bool:
        """True when Redis answers PING; never raises."""
        try:
            return bool(await self.client.ping())
        except Exception as exc:
            log.debug("redis ping failed: %s", exc)
            return False

    async def get_or_default(self, key: str, default: T, purpose: str) -> str | T:
        """GET ``key``; ``default`` when missing, or (counted and logged) when Redis is down."""
        try:
            value = await self.get(key)
        except TransientError:
            return self._fall_back(default, purpose)
        return default if value is None else value

    async def get_json_or_default(self, key: str, default: T, purpose: str) -> Any | T:
        """Decoded JSON at ``key``; ``default`` when missing, or (counted and logged) when Redis is
        down or the stored value is not JSON."""
        try:
            value = await self.get_json(key)
        except TransientError:
            return self._fall_back(default, purpose)
        except json.JSONDecodeError:
            return self._fall_back(default, purpose, why="malformed JSON at " + key)
        return default if value is None else value

    async def close(self) -> None:
        await self.client.aclose()

    @staticmethod
    def _fall_back(default: T, purpose: str, why: str = "redis unavailable") -> T:
        CACHE_FALLBACKS.labels(purpose).inc()
        log.warning("%s: %s falls back to %s", why, purpose, default)
        return default

    @staticmethod
    async def _call(what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except UNAVAILABLE as exc:
            raise TransientError(f"redis unavailable ({what}): {exc.__class__.__name__}: {exc}") from exc
