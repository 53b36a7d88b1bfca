"""PullInbox against a scripted server: what it does with answers a real server rarely gives.

The happy paths run against real NATS in ``tests/integration/bus/test_pull_inbox.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.msg import Msg

from coinpilot.runtime.pull_inbox import PullInbox, PullRefused


class ScriptedServer:
    """A stand-in for the nats-py client: every pull request is answered at once with ``status``."""

    def __init__(self, status: str, description: str) -> None:
        self.status, self.description = status, description
        self.requests: list[bytes] = []
        self._cb: Callable[[Msg], Awaitable[None]] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> object:
        self._cb = cb
        return self

    async def unsubscribe(self) -> None:
        self._cb = None

    async def publish(self, subject: str, payload: bytes, reply: str) -> None:
        """Like a server: the answer arrives after the request is written, as its own event."""
        self.requests.append(payload)
        assert self._cb is not None
        headers = {"Status": self.status, "Description": self.description}
        answer = Msg(_client=self, subject=reply, data=b"", headers=headers)  # type: ignore[arg-type]
        self._answers.add(task := asyncio.get_running_loop().create_task(self._cb(answer)))
        task.add_done_callback(self._answers.discard)


def inbox_on(server: ScriptedServer, request_expires: float = 0.2) -> PullInbox:
    return PullInbox(
        server,  # type: ignore[arg-type]
        stream="CANDLES",
        durable="d",
        batch_size=8,
        request_expires=request_expires,
        rest_wait=0.05,
    )


async def test_requests_answered_at_once_with_nothing_are_repeated_once_per_request_life() -> None:
    server = ScriptedServer("408", "Request Timeout")
    inbox = inbox_on(server, request_expires=0.2)
    await inbox.open()
    assert await inbox.take(0.5) == []
    # a busy loop would have sent thousands in 0.5 s; one per 0.2 s life is at most three
    assert 1 <= len(server.requests) <= 3


async def test_a_refusal_raises_with_the_servers_code_and_reason() -> None:
    inbox = inbox_on(ScriptedServer("409", "Exceeded MaxRequestBatch of 4"))
    await inbox.open()
    with pytest.raises(PullRefused, match="409 Exceeded MaxRequestBatch of 4"):
        await inbox.take(0.5)


@pytest.mark.parametrize("description", ["Leadership Change", "Server Shutdown"])
async def test_a_recoverable_409_ends_the_request_without_an_error(description: str) -> None:
    server = ScriptedServer("409", description)
    inbox = inbox_on(server)
    await inbox.open()
    assert await inbox.take(0.3) == []
    assert server.requests


async def test_a_request_asks_for_the_batch_size_and_expires_with_its_life() -> None:
    server = ScriptedServer("408", "Request Timeout")
    inbox = inbox_on(server, request_expires=0.2)
    await inbox.open()
    await inbox.take(0.05)
    assert server.requests[0] == b'{"batch": 8, "expires": 200000000}'
