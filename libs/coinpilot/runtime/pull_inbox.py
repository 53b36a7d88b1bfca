"""Our side of JetStream's pull protocol for one durable consumer.

A pull request is a message to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` whose reply
subject is our inbox: ``{"batch": n, "expires": ns}``. The server sends up to ``n`` messages there
as they become available, and ends the request early with a status message (``404`` nothing
pending, ``408`` expired, ``409`` refused). At most one request is outstanding here; a
subscription callback appends what arrives to a buffer, and :meth:`PullInbox.take` hands the
loop each run of messages.

Why not nats-py's ``PullSubscription.fetch``: it waits for every message through a new task, a
``wait_for`` timer and a ``uuid4`` (about 20 µs of CPU a message, measured), and each round of
the loop cost it two requests. At ``--pace max`` that was ~13 % of the pipeline's CPU,
spread over the three consumers every candle passes through. Here a message costs one callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from coinpilot.bus import headers as h

STATUS = "Status"
DESCRIPTION = "Description"
HEARTBEAT = "100"
REQUEST_OVER = ("404", "408")  # nothing pending / expired: the loop simply asks again
RECOVERABLE_409 = ("Leadership Change", "Server Shutdown")  # the next request goes to the new leader
LOST_REQUEST_GRACE_SECONDS = 1.0  # past its expiry, an unanswered request (a reconnect) counts as over


class PullRefused(Exception):
    """The server refused a pull request: the consumer was deleted, JetStream did not answer, the
    request was invalid. The loop logs it and asks again after a pause."""


def _status(msg: Msg) -> tuple[str, str] | None:
    """``(code, description)`` of a status message; ``None`` for a stream message."""
    if msg.data or not msg.headers:
        return None
    headers = h.of_message(msg.headers)
    code = headers.get(STATUS)
    return (code, headers.get(DESCRIPTION, "")) if code else None


def _pending_after(msg: Msg) -> int:
    """Messages the consumer still had undelivered when ``msg`` was sent."""
    try:
        return int(msg.metadata.num_pending)
    except Exception:
        return 0


class PullInbox:
    """Pull requests for one durable consumer and the messages they bring.

    A *run* is what :meth:`take` returns: the messages that arrived, once the run is complete: the
    batch is full, or the request is over, or the last message says the consumer had nothing
    more pending. A run whose rest is slow to come (another replica took it) is returned after
    ``rest_wait`` seconds as it is.
    """

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        durable: str,
        batch_size: int,
        request_expires: float,
        rest_wait: float,
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch_size = batch_size
        self._request_expires = request_expires
        self._rest_wait = rest_wait
        self._buffer: deque[Msg] = deque()
        self._open = 0  # messages the outstanding request may still bring
        self._brought = 0  # messages the last request brought so far
        self._requested_at = float("-inf")
        self._over_at = 0.0  # loop time after which the outstanding request counts as over
        self._refused: str | None = None
        self._wake: asyncio.Future[None] | None = None
        self._inbox = ""
        self._sub: Subscription | None = None

    async def open(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def close(self, *, drain: bool = False) -> list[Msg]:
        """Stop listening; returns the messages that arrived but were never taken.

        ``drain``: first wait until the outstanding request is over (bounded by its life), so no
        message the server still sends for it lands in a closed inbox, where it would wait for its
        ack timer while the consumer's next owner overtook it (a partition handed over)."""
        if drain:
            loop = asyncio.get_running_loop()
            while self._open > 0 and loop.time() < self._over_at and self._sub is not None:
                await asyncio.sleep(0.05)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        left = list(self._buffer)
        self._buffer.clear()
        return left

    def buffered(self) -> tuple[Msg, ...]:
        """Messages that arrived but were not taken yet (kept alive while a run waits out an outage)."""
        return tuple(self._buffer)

    async def take(self, wait: float) -> list[Msg]:
        """The next run, waiting up to ``wait`` seconds for its first message; ``[]`` if none came.

        Raises :class:`PullRefused` when the server refused the request.
        """
        loop = asyncio.get_running_loop()
        first_by = loop.time() + wait
        rest_by: float | None = None  # set when the run's first message is here
        while True:
            self._raise_refusal()
            now = loop.time()
            if self._buffer:
                if self._run_complete():
                    return self._pop_run()
                rest_by = now + self._rest_wait if rest_by is None else rest_by
                deadline = rest_by
            else:
                if self._may_request(now):
                    await self._request(now)
                deadline = first_by
            if now >= deadline:
                return self._pop_run()
            await self._sleep_until_woken(deadline - now)

    # -- the protocol ---------------------------------------------------------------------------
    async def _request(self, now: float) -> None:
        body = {"batch": self._batch_size, "expires": int(self._request_expires * 1e9)}
        self._open = self._batch_size
        self._brought = 0
        self._requested_at = now
        self._over_at = now + self._request_expires + LOST_REQUEST_GRACE_SECONDS
        await self._nc.publish(self._next_subject, json.dumps(body).encode(), reply=self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        status = _status(msg)
        if status is None:
            self._buffer.append(msg)
            self._open -= 1
            self._brought += 1
        elif status[0] == HEARTBEAT:
            return
        else:
            self._open = 0
            code, description = status
            if code not in REQUEST_OVER and description not in RECOVERABLE_409:
                self._refused = f"{code} {description}".strip()
        wake = self._wake
        if wake is None or wake.done():
            return
        if status is not None or len(self._buffer) == 1 or self._run_complete():
            wake.set_result(None)

    def _may_request(self, now: float) -> bool:
        """Ask again once the last request is over, but never more than once per request life
        for requests that brought nothing: a server answering at once with a status must not
        turn the loop into a busy one."""
        if self._open > 0 and now < self._over_at:
            return False
        return self._brought > 0 or now - self._requested_at >= self._request_expires

    def _run_complete(self) -> bool:
        return (
            len(self._buffer) >= self._batch_size or self._open <= 0 or _pending_after(self._buffer[-1]) == 0
        )

    def _pop_run(self) -> list[Msg]:
        n = min(len(self._buffer), self._batch_size)
        return [self._buffer.popleft() for _ in range(n)]

    def _raise_refusal(self) -> None:
        if self._refused is not None:
            reason, self._refused = self._refused, None
            raise PullRefused(f"pull request to {self._next_subject} refused: {reason}")

    async def _sleep_until_woken(self, seconds: float) -> None:
        self._wake = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._wake
        except TimeoutError:
            pass
        finally:
            self._wake = None
