"""Local fake LLM APIs for tests: the real Anthropic Messages and OpenAI Chat Completions formats.

One uvicorn server on 127.0.0.1 serves both:

* ``POST /v1/messages`` - Anthropic: ``content`` blocks (``tool_use`` / ``text``), ``usage``,
  ``stop_reason``; errors as ``{"type": "error", "error": {"type", "message"}}`` with the real
  status codes (429 ``rate_limit_error``, 529 ``overloaded_error``, 500 ``api_error``, ...).
* ``POST /v1/chat/completions`` - OpenAI: ``choices[0].message.tool_calls``, ``usage``; errors as
  ``{"error": {"message", "type", "param", "code"}}``.

Drive it with the real SDKs (``base_url=server.anthropic_url`` / ``server.openai_url``). Replies are
scripted per test, in order, per API; every request is recorded (path, headers, JSON body) so a
test can count them. A reply may *hold* until the test releases it (``Reply.held()``), which is how
tests keep a model "thinking" while they kill a consumer or let a client time out.

The Anthropic SDK in this environment (2.x) sends the key as ``Authorization: Bearer <key>``;
older versions sent ``x-api-key``. Both are accepted; anything else is a 401 in the real shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import free_port, wait_for

ANTHROPIC = "anthropic"
OPENAI = "openai"
TEST_KEY = "test-key-not-secret"
_ids = itertools.count(1)


@dataclass
class Reply:
    """One scripted answer. ``verdict`` is wrapped as the forced tool's input (the tool name is
    taken from the request's ``tool_choice``), so one script serves both APIs."""

    status: int = 200
    body: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    raw_arguments: str | None = None
    text: str | None = None
    input_tokens: int = 420
    output_tokens: int = 64
    hold: asyncio.Event | None = None

    @classmethod
    def tool(cls, verdict: Mapping[str, Any], *, input_tokens: int = 420, output_tokens: int = 64) -> Reply:
        return cls(verdict=dict(verdict), input_tokens=input_tokens, output_tokens=output_tokens)

    @classmethod
    def analyst(
        cls, decision: str, confidence: int, reasoning: str = "Hammer after a flush; rebound holds."
    ) -> Reply:
        return cls.tool({"decision": decision, "confidence": confidence, "reasoning": reasoning})

    @classmethod
    def guardian(cls, decision: str, reasoning: str = "Volatility is within its normal range.") -> Reply:
        return cls.tool({"decision": decision, "reasoning": reasoning})

    @classmethod
    def prose(cls, text: str) -> Reply:
        """The model ignored the tool and answered in text."""
        return cls(text=text)

    @classmethod
    def bad_arguments(cls, raw: str) -> Reply:
        """OpenAI only: tool-call arguments that are not JSON."""
        return cls(raw_arguments=raw)

    @classmethod
    def error(cls, status: int, error_type: str, message: str, code: str | None = None) -> Reply:
        return cls(status=status, body={"__error__": {"type": error_type, "message": message, "code": code}})

    @classmethod
    def rate_limited(cls) -> Reply:
        return cls.error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit.")

    @classmethod
    def overloaded(cls) -> Reply:
        return cls.error(529, "overloaded_error", "Overloaded")

    @classmethod
    def server_error(cls) -> Reply:
        return cls.error(500, "api_error", "Internal server error")

    def held(self) -> Reply:
        """Do not answer until :meth:`release` (or the server stops)."""
        self.hold = asyncio.Event()
        return self

    def release(self) -> None:
        if self.hold is not None:
            self.hold.set()


@dataclass(frozen=True)
class SeenRequest:
    api: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int | None = None  # the caller's TCP port: which process sent it

    @property
    def tool_name(self) -> str | None:
        choice = self.body.get("tool_choice") or {}
        if self.api == ANTHROPIC:
            return choice.get("name")
        return (choice.get("function") or {}).get("name")


@dataclass
class FakeLlmServer:
    """Both fake APIs on one loopback port. ``script(api, *replies)`` queues answers in order."""

    api_key: str = TEST_KEY
    port: int = field(default_factory=free_port)
    requests: list[SeenRequest] = field(default_factory=list)
    responder: Callable[[SeenRequest], Reply | None] | None = None
    _queues: dict[str, deque[Reply]] = field(default_factory=lambda: {ANTHROPIC: deque(), OPENAI: deque()})
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _holds: list[Reply] = field(default_factory=list)
    _arrived: asyncio.Condition | None = None

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -----------------------------------------------------------------------------
    def script(self, api: str, *replies: Reply) -> None:
        self._queues[api].extend(replies)

    def reset(self) -> None:
        self.requests.clear()
        for queue in self._queues.values():
            queue.clear()
        self.responder = None
        self.release_all()

    def count(self, api: str | None = None) -> int:
        return sum(1 for r in self.requests if api is None or r.api == api)

    def release_all(self) -> None:
        for reply in self._holds:
            reply.release()
        self._holds.clear()

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:
        """Wait (on a condition, not a sleep) until ``n`` requests have arrived in total."""
        assert self._arrived is not None
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= n)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._arrived = asyncio.Condition()
        app = Starlette(
            routes=[
                Route("/v1/messages", self._anthropic, methods=["POST"]),
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        server = self._server
        await wait_for(lambda: server.started, timeout=10.0)

    async def stop(self) -> None:
        self.release_all()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    # -- handlers ------------------------------------------------------------------------------
    async def _record(self, api: str, request: Request) -> SeenRequest:
        body = await request.json()
        port = request.client.port if request.client is not None else None
        seen = SeenRequest(
            api, request.url.path, {k.lower(): v for k, v in request.headers.items()}, body, port
        )
        assert self._arrived is not None
        async with self._arrived:
            self.requests.append(seen)
            self._arrived.notify_all()
        return seen

    def _next(self, seen: SeenRequest) -> Reply:
        if self.responder is not None:
            reply = self.responder(seen)
            if reply is not None:
                return reply
        queue = self._queues[seen.api]
        if queue:
            return queue.popleft()
        return Reply.error(500, "api_error", "fake server: no scripted reply left")

    async def _wait(self, reply: Reply) -> None:
        if reply.hold is not None:
            self._holds.append(reply)
            await reply.hold.wait()

    async def _anthropic(self, request: Request) -> JSONResponse:
        seen = await self._record(ANTHROPIC, request)
        key = seen.headers.get("x-api-key") or seen.headers.get("authorization", "").removeprefix("Bearer ")
        if key != self.api_key:
            return _anthropic_error(401, "authentication_error", "invalid x-api-key")
        reply = self._next(seen)
        await self._wait(reply)
        if reply.body is not None and "__error__" in reply.body:
            err = reply.body["__error__"]
            return _anthropic_error(reply.status, err["type"], err["message"])
        if reply.body is not None:
            return JSONResponse(reply.body, status_code=reply.status)
        content: list[dict[str, Any]] = []
        stop_reason = "end_turn"
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        if reply.verdict is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{next(_ids):024d}",
                    "name": seen.tool_name or "tool",
                    "input": reply.verdict,
                }
            )
            stop_reason = "tool_use"
        return JSONResponse(
            {
                "id": f"msg_{next(_ids):024d}",
                "type": "message",
                "role": "assistant",
                "model": seen.body.get("model", ""),
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
            }
        )

    async def _openai(self, request: Request) -> JSONResponse:
        seen = await self._record(OPENAI, request)
        if seen.headers.get("authorization") != f"Bearer {self.api_key}":
            return _openai_error(
                401, "invalid_request_error", "Incorrect API key provided.", "invalid_api_key"
            )
        reply = self._next(seen)
        await self._wait(reply)
        if reply.body is not None and "__error__" in reply.body:
            err = reply.body["__error__"]
            return _openai_error(reply.status, err["type"], err["message"], err.get("code"))
        if reply.body is not None:
            return JSONResponse(reply.body, status_code=reply.status)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        finish = "stop"
        if reply.verdict is not None or reply.raw_arguments is not None:
            arguments = reply.raw_arguments if reply.raw_arguments is not None else json.dumps(reply.verdict)
            message["tool_calls"] = [
                {
                    "id": f"call_{next(_ids):020d}",
                    "type": "function",
                    "function": {"name": seen.tool_name or "tool", "arguments": arguments},
                }
            ]
            finish = "tool_calls"
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(_ids):020d}",
                "object": "chat.completion",
                "created": 1_771_372_800,
                "model": seen.body.get("model", ""),
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": {
                    "prompt_tokens": reply.input_tokens,
                    "completion_tokens": reply.output_tokens,
                    "total_tokens": reply.input_tokens + reply.output_tokens,
                },
            }
        )


def _anthropic_error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_{next(_ids)}",
        },
        status_code=status,
        headers={"request-id": f"req_{next(_ids)}"},
    )


def _openai_error(status: int, error_type: str, message: str, code: str | None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}},
        status_code=status,
    )
