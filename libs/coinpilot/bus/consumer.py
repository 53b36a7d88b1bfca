"""The one place that decides what happens to a delivered message (STYLE 2.7).

    parse ──ContractError──────────────────────────────► dlq.<service>, TERM
      │
    handle ──PermanentError─────────────────────────────► dlq.<service>, TERM
      │     ──TransientError / unexpected, deliveries < max ► NAK(delay=backoff)
      │     ──TransientError / unexpected, deliveries = max ► dlq.<service>, TERM
      │
    publish outputs (Nats-Msg-Id dedups a re-publish) ──► ACK

The ack comes last, after the handler committed its effects and its outputs were stored by
JetStream, so a crash anywhere before it means a redelivery, never a loss; handlers are
idempotent, so a redelivery never means a duplicate effect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nats.aio.msg import Msg

from coinpilot import metrics as m
from coinpilot.bus import headers as h
from coinpilot.bus.publisher import Bus
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract
from coinpilot.errors import ContractError, PermanentError

M = TypeVar("M", bound=Contract)
log = logging.getLogger("coinpilot.bus")


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """A parsed message as a handler sees it."""

    message: M
    subject: str
    run_id: str
    trace_id: str
    deliveries: int
    headers: Mapping[str, str]
    raw: Msg | None = field(default=None, repr=False, compare=False)

    async def keepalive(self) -> None:
        """Tell JetStream the message is still being worked on (resets its ack timer)."""
        if self.raw is not None and self.raw._ackd is False:
            await self.raw.in_progress()


Handler = Callable[[Delivery[Any]], Awaitable[Sequence[Contract]]]
Parser = Callable[[str, bytes], Contract]


@dataclass(frozen=True, slots=True)
class Consumer:
    """A durable pull consumer of one subject pattern, handled one message at a time, in order."""

    subject: str
    durable: str
    handler: Handler
    parse: Parser
    max_deliver: int | None = None
    batch_size: int | None = None  # messages pulled per request; 1 for slow handlers (AI review)


def parser_for(*contracts: type[Contract]) -> Parser:
    """Build a parser choosing the contract by subject prefix (e.g. signals.entry.* vs signals.exit.*)."""
    table = [(c.SUBJECT.split("{")[0], c) for c in contracts]

    def parse(subject: str, body: bytes) -> Contract:
        for prefix, contract in table:
            if subject.startswith(prefix):
                return contract.from_json(body)
        raise ContractError(f"no contract for subject {subject!r}")

    return parse


def backoff_seconds(deliveries: int, base: float = 0.5, cap: float = 30.0) -> float:
    return min(cap, base * 2 ** max(0, deliveries - 1))


def _deliveries(raw: Msg) -> int:
    try:
        return int(raw.metadata.num_delivered)
    except Exception:  # a core-NATS message has no JetStream metadata
        return 1


def _sequence(raw: Msg) -> int | None:
    try:
        return int(raw.metadata.sequence.stream)
    except Exception:
        return None


async def process(raw: Msg, consumer: Consumer, bus: Bus, max_deliver: int) -> str:
    """Run the ladder for one message; returns the outcome (acked, nacked, dead-lettered)."""
    service = bus.service
    pattern = consumer.subject
    headers = dict(raw.headers or {})
    deliveries = _deliveries(raw)
    limit = consumer.max_deliver or max_deliver
    started = time.perf_counter()

    async def give_up(reason: str) -> str:
        await bus.dead_letter(
            subject=raw.subject,
            body=raw.data,
            headers=headers,
            reason=reason,
            deliveries=deliveries,
            stream_sequence=_sequence(raw),
        )
        m.MESSAGES_DEAD_LETTERED.labels(service, pattern).inc()
        log.error("dead-lettered %s from %s: %s", raw.subject, service, reason)
        await raw.term()
        return "dead-lettered"

    try:
        message = consumer.parse(raw.subject, raw.data)
    except ContractError as exc:
        m.MESSAGES_FAILED.labels(service, pattern).inc()
        return await give_up(f"contract: {exc}")

    run_id = headers.get(h.RUN_ID, h.LIVE_RUN)
    trace_id = headers.get(h.TRACE_ID) or message.msg_id()
    delivery: Delivery[Any] = Delivery(message, raw.subject, run_id, trace_id, deliveries, headers, raw)
    try:
        outputs = await consumer.handler(delivery)
        await bus.publish_all(outputs, run_id=run_id, trace_id=trace_id)
    except PermanentError as exc:
        m.MESSAGES_FAILED.labels(service, pattern).inc()
        return await give_up(f"permanent: {type(exc).__name__}: {exc}")
    except Exception as exc:
        m.MESSAGES_FAILED.labels(service, pattern).inc()
        if deliveries >= limit:
            return await give_up(f"gave up after {deliveries} deliveries: {type(exc).__name__}: {exc}")
        log.warning(
            "%s failed on %s (delivery %d/%d), will retry: %s: %s",
            service,
            raw.subject,
            deliveries,
            limit,
            type(exc).__name__,
            exc,
        )
        await raw.nak(delay=backoff_seconds(deliveries))
        return "nacked"

    await raw.ack()
    elapsed = time.perf_counter() - started
    m.MESSAGES_HANDLED.labels(service, pattern).inc()
    m.HANDLER_SECONDS.labels(service, pattern).observe(elapsed)
    sent = h.published_at(headers)
    if sent is not None:
        m.END_TO_END_SECONDS.labels(service, pattern).observe(
            max(0.0, (wall_clock_now() - sent).total_seconds())
        )
    return "acked"
