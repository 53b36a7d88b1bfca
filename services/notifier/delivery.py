"""Webhook delivery: every sink at once, each with its own retries, nothing posted twice.

Per notification: skip it if the (sink, event key) was already delivered; otherwise POST up to
``max_attempts`` times with exponential backoff (or Discord's ``retry_after`` on 429), log every
attempt, and record the (sink, event key) as sent in the same transaction as the 2xx attempt. A
sink that never answers 2xx ends ``DEAD``: the handler dead-letters the event with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import httpx
from pydantic import SecretStr

from coinpilot.errors import ConfigError
from services.notifier import metrics
from services.notifier.core import (
    AttemptStatus,
    Notification,
    RetryPolicy,
    Sink,
    classify,
    metric_status,
    retry_after_seconds,
    retry_delay,
)

Keepalive = Callable[[], Awaitable[None]]


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    DEAD = "dead_lettered"


@dataclass(frozen=True, slots=True)
class Attempt:
    notification: Notification
    number: int
    status: AttemptStatus
    status_code: int | None
    error: str | None
    seconds: float


@dataclass(frozen=True, slots=True)
class SinkResult:
    sink: Sink
    outcome: Outcome
    attempts: int
    detail: str = ""


class DeliveryJournal(Protocol):
    """Where attempts are logged and successes remembered (``state.py``: PostgreSQL)."""

    async def already_sent(self, sink: Sink, event_key: str) -> bool: ...

    async def record(self, attempt: Attempt) -> None:
        """Log the attempt; a SENT attempt also claims (sink, event key) in the same transaction."""
        ...

    async def give_up(self, n: Notification, attempts: int, reason: str) -> None:
        """Log that this sink will not get the event (it goes to the DLQ)."""
        ...


@dataclass(frozen=True, slots=True)
class SinkTargets:
    discord_webhook_url: SecretStr | None = None
    n8n_base_url: str | None = None
    n8n_secret: SecretStr | None = None

    def sinks(self) -> frozenset[Sink]:
        out = set()
        if self.discord_webhook_url is not None:
            out.add(Sink.DISCORD)
        # As the original: without a secret nothing is sent to n8n at all (§7.1).
        if self.n8n_base_url and self.n8n_secret is not None:
            out.add(Sink.N8N)
        return frozenset(out)

    def request(self, n: Notification) -> tuple[str, dict[str, str]]:
        """URL and headers of one POST. ``Idempotency-Key`` is the event key, the same on every
        attempt and redelivery, so a receiver that keeps it can drop the rare second post of an
        event (a replica killed between the sink's 2xx and its record of it)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.event_key}
        if n.sink is Sink.DISCORD and self.discord_webhook_url is not None:
            return self.discord_webhook_url.get_secret_value(), headers
        if n.sink is not Sink.N8N or self.n8n_base_url is None or self.n8n_secret is None:
            raise ConfigError(f"sink {n.sink} is not configured")
        headers["X-Webhook-Secret"] = self.n8n_secret.get_secret_value()
        return f"{self.n8n_base_url.rstrip('/')}/webhook/{n.path}", headers


KEEPALIVE_SECONDS = 10.0


async def _no_keepalive() -> None:
    return None


async def _pause(seconds: float, keepalive: Keepalive) -> None:
    """Back off, telling JetStream every few seconds that the event is still being worked on."""
    remaining = seconds
    while True:
        await keepalive()
        if remaining <= 0:
            return
        step = min(remaining, KEEPALIVE_SECONDS)
        await asyncio.sleep(step)
        remaining -= step


class Deliverer:
    def __init__(
        self, client: httpx.AsyncClient, targets: SinkTargets, policy: RetryPolicy, journal: DeliveryJournal
    ) -> None:
        self._client = client
        self._targets = targets
        self._policy = policy
        self._journal = journal

    async def deliver_all(
        self, notifications: Sequence[Notification], keepalive: Keepalive = _no_keepalive
    ) -> list[SinkResult]:
        """Deliver to every sink concurrently; returns when each one is sent or given up on.

        If one sink fails unexpectedly (e.g. the journal's database is down), the others still
        finish before the error is raised, so a retry never races a post still in flight.
        """
        outcomes = await asyncio.gather(
            *(self.deliver(n, keepalive) for n in notifications), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [o for o in outcomes if isinstance(o, SinkResult)]

    async def deliver(self, n: Notification, keepalive: Keepalive = _no_keepalive) -> SinkResult:
        labels = (str(n.sink), str(n.event_type))
        if await self._journal.already_sent(n.sink, n.event_key):
            metrics.DELIVERIES.labels(*labels, Outcome.DUPLICATE).inc()
            return SinkResult(n.sink, Outcome.DUPLICATE, 0)
        url, headers = self._targets.request(n)
        body = n.body_bytes()
        last = ""
        for number in range(1, self._policy.max_attempts + 1):
            attempt, retry_after = await self._post(n, number, url, headers, body)
            metrics.DELIVERIES.labels(*labels, metric_status(attempt.status)).inc()
            metrics.DELIVERY_SECONDS.labels(*labels).observe(attempt.seconds)
            await self._journal.record(attempt)
            if attempt.status is AttemptStatus.SENT:
                return SinkResult(n.sink, Outcome.SENT, number)
            last = attempt.error or f"HTTP {attempt.status_code}"
            if attempt.status is AttemptStatus.REJECTED:
                return await self._give_up(n, number, f"refused: {last}")
            if number < self._policy.max_attempts:
                await _pause(retry_delay(self._policy, number, retry_after), keepalive)
        return await self._give_up(n, self._policy.max_attempts, f"gave up: {last}")

    async def _give_up(self, n: Notification, attempts: int, detail: str) -> SinkResult:
        metrics.DELIVERIES.labels(str(n.sink), str(n.event_type), Outcome.DEAD).inc()
        await self._journal.give_up(n, attempts, detail)
        return SinkResult(n.sink, Outcome.DEAD, attempts, detail)

    async def _post(
        self, n: Notification, number: int, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[Attempt, float | None]:
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            response = await self._client.post(
                url, content=body, headers=headers, timeout=self._policy.request_timeout_seconds
            )
            code = response.status_code
            status = classify(code)
            if status is AttemptStatus.RATE_LIMITED:
                retry_after = retry_after_seconds(response.headers, response.content)
            if status is not AttemptStatus.SENT:
                error = f"HTTP {code}: {response.text[:200]}"
        except httpx.TimeoutException as exc:
            status, error = (
                AttemptStatus.FAILED,
                f"timeout after {self._policy.request_timeout_seconds}s ({exc!r})",
            )
        except httpx.HTTPError as exc:
            status, error = AttemptStatus.FAILED, f"{type(exc).__name__}: {exc}"
        if error is not None:
            error = error.replace(url, f"<{n.sink} webhook>")  # a Discord URL carries its token
        attempt = Attempt(n, number, status, code, error, time.perf_counter() - started)
        return attempt, retry_after


def dead_letter_reason(results: Sequence[SinkResult]) -> str | None:
    """One reason naming every sink that gave up, or None when all were sent (or already were)."""
    dead = [r for r in results if r.outcome is Outcome.DEAD]
    if not dead:
        return None
    return "; ".join(f"{r.sink} after {r.attempts} attempt(s): {r.detail}" for r in dead)
