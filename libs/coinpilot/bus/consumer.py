"""The one place that decides what happens to a delivered message (STYLE 2.7).

    parse ──ContractError──────────────────────────────► dlq.<service>, TERM
      │
    handle ──PermanentError─────────────────────────────► dlq.<service>, TERM
      │     ──TransientError / unexpected, deliveries < max ► NAK(delay=backoff)
      │     ──TransientError / unexpected, deliveries = max ► dlq.<service>, TERM
      │
    publish outputs (Nats-Msg-Id dedups a re-publish) ──► ACK

A consumer built with :meth:`Consumer.of_batches` handles a fetched run of messages as one unit
of work (one transaction, one round of publishes, then the acks): the same ladder, amortised. If
that unit fails for any reason, its messages go through the ladder one at a time, so a poison
message is still isolated and dead-lettered alone, and a transient failure still NAKs with backoff.

The ack comes last, after the handler committed its effects and its outputs were stored by
JetStream, so a crash anywhere before it means a redelivery, never a loss; handlers are
idempotent, so a redelivery never means a duplicate effect.
"""

from __future__ import annotations

import functools
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
BatchHandler = Callable[[Sequence[Delivery[Any]]], Awaitable[Sequence[Sequence[Contract]]]]
Parser = Callable[[str, bytes], Contract]

BATCH_SIZE = 256  # messages a batch consumer takes per fetch: enough to amortise a transaction


@dataclass(frozen=True, slots=True)
class Consumer:
    """A durable pull consumer of one subject pattern, handled one message at a time, in order."""

    subject: str
    durable: str
    handler: Handler
    parse: Parser
    max_deliver: int | None = None
    batch_size: int | None = None  # messages pulled per request; 1 for slow handlers (AI review)
    batch_handler: BatchHandler | None = None  # set by of_batches

    @classmethod
    def of_batches(
        cls,
        subject: str,
        durable: str,
        handle_batch: BatchHandler,
        parse: Parser,
        *,
        batch_size: int = BATCH_SIZE,
        max_deliver: int | None = None,
    ) -> Consumer:
        """A consumer whose handler takes every delivery of a fetch, in order, and returns each
        one's outputs (same length, same order); a single message is a batch of one."""

        async def handle_one(delivery: Delivery[Any]) -> Sequence[Contract]:
            return (await handle_batch([delivery]))[0]

        return cls(subject, durable, handle_one, parse, max_deliver, batch_size, handle_batch)


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


@dataclass(frozen=True, slots=True)
class _Meters:
    """A consumer's metric children, looked up once instead of on every message."""

    handled: Any
    failed: Any
    dead_lettered: Any
    handler_seconds: Any
    end_to_end_seconds: Any


@functools.cache
def _meters(service: str, pattern: str) -> _Meters:
    return _Meters(
        m.MESSAGES_HANDLED.labels(service, pattern),
        m.MESSAGES_FAILED.labels(service, pattern),
        m.MESSAGES_DEAD_LETTERED.labels(service, pattern),
        m.HANDLER_SECONDS.labels(service, pattern),
        m.END_TO_END_SECONDS.labels(service, pattern),
    )


def _delivery(raw: Msg, consumer: Consumer, headers: dict[str, str], deliveries: int) -> Delivery[Any]:
    """Parse ``raw`` into what a handler sees; raises ContractError."""
    message = consumer.parse(raw.subject, raw.data)
    run_id = headers.get(h.RUN_ID, h.LIVE_RUN)
    trace_id = headers.get(h.TRACE_ID) or message.msg_id()
    return Delivery(message, raw.subject, run_id, trace_id, deliveries, headers, raw)


def _observe_done(meters: _Meters, headers: Mapping[str, str], seconds: float) -> None:
    meters.handled.inc()
    meters.handler_seconds.observe(seconds)
    sent = h.published_at(headers)
    if sent is not None:
        meters.end_to_end_seconds.observe(max(0.0, (wall_clock_now() - sent).total_seconds()))


async def _dead_letter(raw: Msg, bus: Bus, meters: _Meters, headers: dict[str, str], reason: str) -> str:
    await bus.dead_letter(
        subject=raw.subject,
        body=raw.data,
        headers=headers,
        reason=reason,
        deliveries=_deliveries(raw),
        stream_sequence=_sequence(raw),
    )
    meters.dead_lettered.inc()
    log.error("dead-lettered %s from %s: %s", raw.subject, bus.service, reason)
    await raw.term()
    return "dead-lettered"


async def process(raw: Msg, consumer: Consumer, bus: Bus, max_deliver: int) -> str:
    """Run the ladder for one message; returns the outcome (acked, nacked, dead-lettered)."""
    service = bus.service
    meters = _meters(service, consumer.subject)
    headers = h.of_message(raw.headers)
    deliveries = _deliveries(raw)
    limit = consumer.max_deliver or max_deliver
    started = time.perf_counter()

    try:
        delivery = _delivery(raw, consumer, headers, deliveries)
    except ContractError as exc:
        meters.failed.inc()
        return await _dead_letter(raw, bus, meters, headers, f"contract: {exc}")

    try:
        outputs = await consumer.handler(delivery)
        # written back to back, then every ack awaited: an hour's close (candle, regime, snapshot)
        # costs one round trip, not three, and the snapshot is not held behind the other two acks
        await bus.publish_batch([(out, delivery.run_id, delivery.trace_id) for out in outputs])
    except PermanentError as exc:
        meters.failed.inc()
        return await _dead_letter(raw, bus, meters, headers, f"permanent: {type(exc).__name__}: {exc}")
    except Exception as exc:
        meters.failed.inc()
        if deliveries >= limit:
            reason = f"gave up after {deliveries} deliveries: {type(exc).__name__}: {exc}"
            return await _dead_letter(raw, bus, meters, headers, reason)
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
    _observe_done(meters, headers, time.perf_counter() - started)
    return "acked"


async def process_batch(raws: Sequence[Msg], consumer: Consumer, bus: Bus, max_deliver: int) -> list[str]:
    """Run the ladder for a fetched run of messages, in order; returns each one's outcome.

    Each message's handler time is observed as the batch's time divided among its messages, so
    the metric's sum is still the time spent and its mean the amortised cost of one message.
    """
    if consumer.batch_handler is None or len(raws) == 1:
        return [await process(raw, consumer, bus, max_deliver) for raw in raws]
    meters = _meters(bus.service, consumer.subject)
    started = time.perf_counter()
    outcomes: dict[int, str] = {}
    parsed: list[tuple[int, Delivery[Any]]] = []
    for i, raw in enumerate(raws):
        headers = h.of_message(raw.headers)
        try:
            parsed.append((i, _delivery(raw, consumer, headers, _deliveries(raw))))
        except ContractError as exc:
            meters.failed.inc()
            outcomes[i] = await _dead_letter(raw, bus, meters, headers, f"contract: {exc}")
    deliveries = [d for _, d in parsed]
    try:
        outputs = await consumer.batch_handler(deliveries)
        if len(outputs) != len(deliveries):
            raise RuntimeError(f"batch handler gave {len(outputs)} results for {len(deliveries)} messages")
        await bus.publish_batch(
            [(out, d.run_id, d.trace_id) for d, outs in zip(deliveries, outputs, strict=True) for out in outs]
        )
    except Exception as exc:
        log.warning(
            "%s: a batch of %d from %s failed (%s: %s); handling its messages one at a time",
            bus.service,
            len(deliveries),
            consumer.subject,
            type(exc).__name__,
            exc,
        )
        for i, _ in parsed:
            outcomes[i] = await process(raws[i], consumer, bus, max_deliver)
        return [outcomes[i] for i in range(len(raws))]
    for i, _ in parsed:
        await raws[i].ack()
        outcomes[i] = "acked"
    share = (time.perf_counter() - started) / max(1, len(parsed))
    for _, delivery in parsed:
        _observe_done(meters, delivery.headers, share)
    return [outcomes[i] for i in range(len(raws))]
