"""A local OpenAI Chat Completions endpoint for the daily-report summary, driven by the real SDK.

``POST /v1/chat/completions`` answers the real response shape (``choices[0].message.content``,
``usage``) or, when scripted, the real error shape ``{"error": {message, type, param, code}}``.
Kept here, small, so the notifier tests do not depend on the agent's fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import free_port, wait_for

API_KEY = "sk-test-not-secret"
_ids = itertools.count(1)


@dataclass
class FakeOpenAi:
    port: int = field(default_factory=free_port)
    replies: list[tuple[int, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(self, text: str) -> None:
        self.replies.append((200, text))

    def fail(self, status: int, message: str) -> None:
        self.replies.append((status, message))

    async def _completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "invalid_request_error", "Incorrect API key provided.", "invalid_api_key")
        status, text = self.replies.pop(0) if self.replies else (200, "ok")
        if status != 200:
            return _error(status, "server_error", text, None)
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(_ids)}",
                "object": "chat.completion",
                "created": 1772400000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 310, "completion_tokens": 58, "total_tokens": 368},
            }
        )

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        await wait_for(lambda: self._server is not None and self._server.started, timeout=10)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _error(status: int, error_type: str, message: str, code: str | None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}, status_code=status
    )
