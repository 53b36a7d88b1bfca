"""Publishing contracts onto JetStream with the standard headers and a deterministic id."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from coinpilot.bus import dead_letters
from coinpilot.bus import headers as h
from coinpilot.bus.permissions import guard_for
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import Contract, DeadLetter
from coinpilot.errors import TransientError

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default, when the server did not say
DEAD_LETTER_MARGIN = 1024  # bytes kept free below the max payload for the protocol's framing


def _headers(msg: Contract, run_id: str, trace_id: str | None) -> dict[str, str]:
    msg_id = msg.msg_id()
    return h.build_headers(
        msg_id=msg_id,
        run_id=run_id,
        trace_id=trace_id or msg_id,
        ts_event=msg.ts_event,
        published_at=wall_clock_now(),
        schema=f"{type(msg).__name__}/v{msg.schema_version}",
    )


class Bus:
    """Publishes contracts for one service; every publish waits for the stream's ack.

    A service's bus publishes only its allow-list (``bus/permissions.py``) and raises
    ``PublishNotAllowed`` for anything else, before the server would refuse it with a bare timeout.
    """

    def __init__(self, js: JetStreamContext, service: str, timeout: float = 5.0) -> None:
        self._js = js
        self.service = service
        self._timeout = timeout
        self._guard = guard_for(service)

    async def publish(self, msg: Contract, *, run_id: str, trace_id: str | None = None) -> None:
        await self.publish_raw(msg.subject(), msg.to_json(), _headers(msg, run_id, trace_id))

    async def publish_batch(self, items: Sequence[tuple[Contract, str, str | None]]) -> None:
        """Publish ``(message, run id, trace id)`` items in order, then wait for all their acks.

        The messages are written to the connection one after another (so a stream stores them in
        this order) without a round trip each; any failed or missing ack fails the whole call,
        and a retry is safe because every message carries its Nats-Msg-Id.
        """
        if not items:
            return
        if self._guard is not None:
            for msg, _, _ in items:
                self._guard.check(msg.subject())
        futures: list[asyncio.Future[Any]] = []
        try:
            for msg, run_id, trace_id in items:
                headers = _headers(msg, run_id, trace_id)
                futures.append(await self._js.publish_async(msg.subject(), msg.to_json(), headers=headers))
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self._timeout)
        except (NatsError, JetStreamError, TimeoutError) as exc:
            for future in futures:
                future.cancel()
            what = f"{type(exc).__name__}: {exc}"
            raise TransientError(f"publish of {len(items)} messages failed: {what}") from exc

    async def publish_raw(self, subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        if self._guard is not None:
            self._guard.check(subject)
        try:
            await self._js.publish(subject, body, timeout=self._timeout, headers=dict(headers))
        except (NatsError, JetStreamError, TimeoutError) as exc:
            raise TransientError(f"publish to {subject} failed: {type(exc).__name__}: {exc}") from exc

    async def dead_letter(
        self,
        *,
        subject: str,
        body: bytes,
        headers: Mapping[str, str],
        reason: str,
        deliveries: int,
        stream_sequence: int | None,
        stream: str | None = None,
    ) -> DeadLetter:
        """Publish ``dlq.<service>``: everything needed to inspect and redrive the message. A
        letter larger than the server's max payload is stored truncated (``dead_letters.fit``),
        so it is always published and its source can always be terminated."""
        text, encoding = dead_letters.encoded_body(body)
        trace_id = headers.get(h.TRACE_ID)
        letter = DeadLetter(
            ts_event=wall_clock_now(),
            service=self.service,
            subject_original=subject,
            reason=reason[:4000],
            deliveries=deliveries,
            headers=dict(headers),
            body=text,
            body_encoding=encoding,
            stream_sequence=stream_sequence,
            trace_id=trace_id[:256] if trace_id else None,
            stream=stream,
        )
        run_id = headers.get(h.RUN_ID, h.LIVE_RUN)[:256]
        wire_headers = _headers(letter, run_id, letter.trace_id)
        header_bytes = sum(len(k) + len(v) + 4 for k, v in wire_headers.items()) + 16
        letter = dead_letters.fit(letter, self._max_payload() - header_bytes - DEAD_LETTER_MARGIN)
        await self.publish(letter, run_id=run_id, trace_id=letter.trace_id)
        return letter

    def _max_payload(self) -> int:
        """The connected server's max payload (headers and body together)."""
        nc = getattr(self._js, "_nc", None)
        return int(getattr(nc, "max_payload", 0) or DEFAULT_MAX_PAYLOAD)
