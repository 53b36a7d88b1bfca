"""The one place that decides what happens to a delivered message (STYLE 2.7).

    parse ──ContractError─────────────────────────────────────► dlq.<service>, TERM
      │
    handle ──PermanentError (RefusedMessage: its alerts first) ──► dlq.<service>, TERM
      │     ──transient (TransientError, ConnectionError, Timeout) ► wait, keep the ack timer
      │                                                 alive, try again IN PLACE, for as long as
      │                                                 it takes (a stop hands it back: NAK)
      │     ──unexpected (a bug), deliveries < max ────────────► NAK(delay=backoff)
      │     ──unexpected (a bug), deliveries = max ────────────► dlq.<service>, TERM
      │
    publish outputs (Nats-Msg-Id dedups a re-publish) ──► ACK

Transient failures (PostgreSQL, Redis or NATS unavailable, a timeout) never dead-letter: an
outage of any length costs time, never a message. They are retried where they failed rather than
NAKed, because a NAK with a delay lets the messages behind it overtake it; waiting in place keeps
the stream's order (per-symbol state depends on it). While it waits the consumer counts
``coinpilot_transient_retries_total`` and shows in ``coinpilot_consumers_retrying``, and the
service reports not ready. The waits grow from 0.5 s to a cap of 5 s, so work resumes within
seconds of the dependency's return; the message (and those held behind it) are kept alive with
``in_progress`` meanwhile, so JetStream does not redeliver them.

Permanent failures are dead-lettered on their first delivery: a contract error, a
:class:`PermanentError` (a database refusing the data, SQLSTATE classes 22 and 23, is mapped to it
by ``coinpilot.db.database``), a :class:`RefusedMessage` (whose alerts are published first).

An unexpected exception is a bug, not an outage: it is NAKed with backoff and dead-lettered after
``max_deliver`` deliveries, as before. Retrying a bug in place would stop the consumer for good
behind one message; dead-lettering it at once would lose what a race or a restart might still
heal. Its delay may let later messages overtake it; that is the price of not wedging.

A consumer built with :meth:`Consumer.of_batches` handles a fetched run of messages as one unit
of work (one transaction, one round of publishes, then the acks): the same ladder, amortised. If
that unit fails for any reason, its messages go through the ladder one at a time, so a poison
message is still isolated and dead-lettered alone, and a transient failure waits in place at the
first message of the run, then the rest follow in order.

A dead letter always fits: one larger than the server's max payload is stored truncated, with the
stream and sequence of the original (``Bus.dead_letter``), so the source message is always
terminated and never wedges the consumer.

The ack comes last, after the handler committed its effects and its outputs were stored by
JetStream, so a crash anywhere before it means a redelivery, never a loss; handlers are
idempotent, so a redelivery (or an in-place retry) never means a duplicate effect.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from coinpilot.errors import ContractError, PermanentError, RefusedMessage, TransientError

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


TRANSIENT = (TransientError, ConnectionError, TimeoutError)
"""What an outage looks like from a handler: retried in place, never dead-lettered."""

HANDED_BACK = "handed back"  # outcome of a message NAKed because its consumer stopped while it waited


class Patience:
    """How one consumer waits out a transient failure in place: capped exponential waits, the
    held messages' ack timers kept alive, and a stop that ends the wait (the loop hands the
    messages back). One per pull loop; ``retrying`` is what readiness reads.

    ``hand_back_delay``: the NAK delay of a handed-back message. A pull request still open on the
    server would take a message NAKed without delay straight back into an inbox that is closing,
    where it would sit until its ack timer; the pull loop sets it past a request's life.
    """

    def __init__(
        self,
        *,
        base: float = 0.5,
        cap: float = 5.0,
        keepalive_every: float = 10.0,
        hand_back_delay: float = 0.0,
    ) -> None:
        self.base = base
        self.cap = cap
        self.keepalive_every = keepalive_every
        self.hand_back_delay = hand_back_delay
        self.retrying = False
        # messages in hand besides the run's: what a pull request brought but the loop has not taken
        self.also_held: Callable[[], Sequence[Msg]] = tuple
        self._stop: asyncio.Event | None = None

    def stop(self) -> None:
        """End any wait now and every later one at once."""
        self._event().set()

    async def wait(self, attempt: int, held: Sequence[Msg]) -> bool:
        """Sleep the ``attempt``-th backoff, telling JetStream the ``held`` messages are still in
        hand; False when the consumer is stopping (the caller hands them back)."""
        stop = self._event()
        remaining = backoff_seconds(attempt, self.base, self.cap)
        while not stop.is_set():
            await _keep_alive((*held, *self.also_held()))
            if remaining <= 0:
                return True
            step = min(remaining, self.keepalive_every)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step):
                    await stop.wait()
            remaining -= step
        return False

    async def hand_back(self, raw: Msg) -> None:
        """NAK ``raw`` for whoever pulls next; NATS being down is no reason to fail (its ack timer
        then redelivers it)."""
        with contextlib.suppress(Exception):
            await raw.nak(delay=self.hand_back_delay or None)

    async def keeping_alive(self, step: Callable[[], Awaitable[None]], held: Sequence[Msg]) -> None:
        """Run ``step`` while ``held`` is kept alive every ``keepalive_every`` seconds."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.keepalive_every)
                await _keep_alive((*held, *self.also_held()))

        ticker = asyncio.create_task(tick())
        try:
            await step()
        finally:
            ticker.cancel()

    def _event(self) -> asyncio.Event:
        if self._stop is None:
            self._stop = asyncio.Event()
        return self._stop


async def _keep_alive(held: Sequence[Msg]) -> None:
    """``in_progress`` for every held message not yet acked; NATS being down is no reason to fail."""
    for raw in held:
        if raw._ackd is False:
            with contextlib.suppress(Exception):
                await raw.in_progress()


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
    transient_retries: Any
    retrying: Any


@functools.cache
def _meters(service: str, pattern: str) -> _Meters:
    return _Meters(
        m.MESSAGES_HANDLED.labels(service, pattern),
        m.MESSAGES_FAILED.labels(service, pattern),
        m.MESSAGES_DEAD_LETTERED.labels(service, pattern),
        m.HANDLER_SECONDS.labels(service, pattern),
        m.END_TO_END_SECONDS.labels(service, pattern),
        m.TRANSIENT_RETRIES.labels(service, pattern),
        m.CONSUMERS_RETRYING.labels(service),
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


def _stream(raw: Msg) -> str | None:
    try:
        return str(raw.metadata.stream)
    except Exception:
        return None


async def _dead_letter(
    raw: Msg,
    bus: Bus,
    meters: _Meters,
    headers: dict[str, str],
    reason: str,
    patience: Patience,
    held: Sequence[Msg],
    alerts: Sequence[object] = (),
) -> str:
    """Publish ``alerts`` then the dead letter (waiting out a NATS outage in place), then TERM."""
    run_id = headers.get(h.RUN_ID, h.LIVE_RUN)
    trace_id = headers.get(h.TRACE_ID)

    async def store() -> None:
        await bus.publish_batch(
            [(alert, run_id, trace_id) for alert in alerts if isinstance(alert, Contract)]
        )
        await bus.dead_letter(
            subject=raw.subject,
            body=raw.data,
            headers=headers,
            reason=reason,
            deliveries=_deliveries(raw),
            stream_sequence=_sequence(raw),
            stream=_stream(raw),
        )

    if not await _patiently(store, raw, bus, meters, patience, held):
        return HANDED_BACK
    meters.dead_lettered.inc()
    log.error("dead-lettered %s from %s: %s", raw.subject, bus.service, reason)
    await raw.term()
    return "dead-lettered"


async def _patiently(
    step: Callable[[], Awaitable[None]],
    raw: Msg,
    bus: Bus,
    meters: _Meters,
    patience: Patience,
    held: Sequence[Msg],
) -> bool:
    """Run ``step`` until it does not fail transiently; False (``raw`` NAKed) if the consumer
    stops meanwhile. Other exceptions propagate."""
    attempt = 0
    try:
        while True:
            try:
                if attempt:  # a retry may itself be slow (a connect timeout): keep the run alive through it
                    await patience.keeping_alive(step, held)
                else:
                    await step()
                if attempt:
                    log.warning(
                        "%s: %s went through after %d attempts", bus.service, raw.subject, attempt + 1
                    )
                return True
            except TRANSIENT as exc:
                attempt += 1
                meters.failed.inc()
                meters.transient_retries.inc()
                if not patience.retrying:
                    patience.retrying = True
                    meters.retrying.inc()
                log_at = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
                log.log(
                    log_at,
                    "%s: transient failure on %s (attempt %d), waiting in place: %s: %s",
                    bus.service,
                    raw.subject,
                    attempt,
                    type(exc).__name__,
                    exc,
                )
                if not await patience.wait(attempt, held):
                    await patience.hand_back(raw)
                    return False
    finally:
        if patience.retrying:
            patience.retrying = False
            meters.retrying.dec()


async def process(
    raw: Msg,
    consumer: Consumer,
    bus: Bus,
    max_deliver: int,
    patience: Patience | None = None,
    held: Sequence[Msg] | None = None,
) -> str:
    """Run the ladder for one message; returns the outcome (acked, nacked, dead-lettered, handed back).

    ``held``: the messages in hand behind ``raw`` (``raw`` first), kept alive while it waits out
    an outage; ``patience``: the consumer's (a fresh one, never stopped, when omitted).
    """
    service = bus.service
    meters = _meters(service, consumer.subject)
    headers = h.of_message(raw.headers)
    deliveries = _deliveries(raw)
    limit = consumer.max_deliver or max_deliver
    patience = patience or Patience()
    held = held or (raw,)
    started = time.perf_counter()

    try:
        delivery = _delivery(raw, consumer, headers, deliveries)
    except ContractError as exc:
        meters.failed.inc()
        return await _dead_letter(raw, bus, meters, headers, f"contract: {exc}", patience, held)

    async def handle() -> None:
        outputs = await consumer.handler(delivery)
        # written back to back, then every ack awaited: an hour's close (candle, regime, snapshot)
        # costs one round trip, not three, and the snapshot is not held behind the other two acks
        await bus.publish_batch([(out, delivery.run_id, delivery.trace_id) for out in outputs])

    try:
        if not await _patiently(handle, raw, bus, meters, patience, held):
            return HANDED_BACK
    except PermanentError as exc:
        meters.failed.inc()
        reason = f"permanent: {type(exc).__name__}: {exc}"
        alerts = exc.alerts if isinstance(exc, RefusedMessage) else ()
        return await _dead_letter(raw, bus, meters, headers, reason, patience, held, alerts)
    except Exception as exc:
        meters.failed.inc()
        if deliveries >= limit:
            reason = f"gave up after {deliveries} deliveries: {type(exc).__name__}: {exc}"
            return await _dead_letter(raw, bus, meters, headers, reason, patience, held)
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


async def _one_at_a_time(
    raws: Sequence[Msg], consumer: Consumer, bus: Bus, max_deliver: int, patience: Patience
) -> list[str]:
    """The ladder for each message in order; once one is handed back (the consumer stops while it
    waits out an outage), those behind it are handed back too, untouched, so order is kept."""
    outcomes: list[str] = []
    for i, raw in enumerate(raws):
        if outcomes and outcomes[-1] == HANDED_BACK:
            await patience.hand_back(raw)
            outcomes.append(HANDED_BACK)
            continue
        outcomes.append(await process(raw, consumer, bus, max_deliver, patience, raws[i:]))
    return outcomes


async def process_batch(
    raws: Sequence[Msg], consumer: Consumer, bus: Bus, max_deliver: int, patience: Patience | None = None
) -> list[str]:
    """Run the ladder for a fetched run of messages, in order; returns each one's outcome.

    Each message's handler time is observed as the batch's time divided among its messages, so
    the metric's sum is still the time spent and its mean the amortised cost of one message.
    """
    patience = patience or Patience()
    if consumer.batch_handler is None or len(raws) == 1:
        return await _one_at_a_time(raws, consumer, bus, max_deliver, patience)
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
            outcomes[i] = await _dead_letter(raw, bus, meters, headers, f"contract: {exc}", patience, raws)
            if outcomes[i] == HANDED_BACK:
                for j in range(i + 1, len(raws)):
                    await patience.hand_back(raws[j])
                    outcomes[j] = HANDED_BACK
                return [outcomes[j] for j in range(len(raws))]
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
        rest = [i for i, _ in parsed]
        for i, outcome in zip(
            rest,
            await _one_at_a_time([raws[i] for i in rest], consumer, bus, max_deliver, patience),
            strict=True,
        ):
            outcomes[i] = outcome
        return [outcomes[i] for i in range(len(raws))]
    for i, _ in parsed:
        await raws[i].ack()
        outcomes[i] = "acked"
    share = (time.perf_counter() - started) / max(1, len(parsed))
    for _, delivery in parsed:
        _observe_done(meters, delivery.headers, share)
    return [outcomes[i] for i in range(len(raws))]
