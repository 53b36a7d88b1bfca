"""Local HTTP servers speaking Discord's webhook API and n8n's webhook trigger, on 127.0.0.1.

Driven by the real httpx client in tests. Each server records what it received and can be scripted
to misbehave for the next requests (``script``) or for all of them (``always``):

* Discord: ``POST /api/webhooks/{id}/{token}`` -> 204; 401/404 for a wrong token/id; 400 for an
  embed breaking Discord's limits; 429 ``{"message", "retry_after": <seconds float>, "global"}``
  with a ``Retry-After`` header when scripted.
* n8n: ``POST /webhook/<path>`` -> 200 ``{"ok": true}``; 401 on a wrong ``X-Webhook-Secret``
  (the fixed workflows answer from a "Respond to Webhook" node); 404 for an unknown path.

A "hang" holds the request open until the server stops, so a client timeout can be proven without
any sleeping in the test. A "hold" takes the request in at once (it is recorded as received and
answered 2xx, as a sink that posted the message) but sends the answer only on ``release_holds``,
so a test can kill the client between the sink's receipt and its reading of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import free_port, wait_for

Kind = Literal["status", "hang", "rate_limit", "hold"]


@dataclass(frozen=True)
class Misbehave:
    kind: Kind
    status: int = 503
    retry_after: float = 0.05

    @classmethod
    def error(cls, status: int = 503) -> Misbehave:
        return cls("status", status=status)

    @classmethod
    def hang(cls) -> Misbehave:
        return cls("hang")

    @classmethod
    def hold(cls) -> Misbehave:
        return cls("hold")

    @classmethod
    def rate_limited(cls, retry_after: float = 0.05) -> Misbehave:
        return cls("rate_limit", retry_after=retry_after)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    answered: int
    client_port: int | None = None  # the caller's TCP port: which process sent it


@dataclass
class _FakeServer:
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    queued: list[Misbehave] = field(default_factory=list)
    always: Misbehave | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _held: asyncio.Event = field(default_factory=asyncio.Event)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *steps: Misbehave) -> None:
        """Misbehave for the next ``len(steps)`` requests, in order, then behave."""
        self.queued.extend(steps)

    def release_holds(self) -> None:
        """Send the answers of the held requests (they were already received)."""
        self._held.set()

    def bodies(self, path_suffix: str = "") -> list[Any]:
        """Bodies of the requests that were answered 2xx (optionally only for one path)."""
        return [r.body for r in self.received if 200 <= r.answered < 300 and r.path.endswith(path_suffix)]

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        await wait_for(lambda: len(self.received) >= count, timeout=timeout)
        return self.received

    def _next_misbehaviour(self) -> Misbehave | None:
        if self.queued:
            return self.queued.pop(0)
        return self.always

    async def _misbehave(self, step: Misbehave) -> Response:
        if step.kind == "hang":
            await self._release.wait()
            return Response(status_code=504)
        if step.kind == "rate_limit":
            return JSONResponse(
                {"message": "You are being rate limited.", "retry_after": step.retry_after, "global": False},
                status_code=429,
                headers={"Retry-After": str(math.ceil(step.retry_after)), "X-RateLimit-Scope": "user"},
            )
        return JSONResponse({"message": "scripted failure", "code": 0}, status_code=step.status)

    async def _handle(self, request: Request, check: Any) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        step = self._next_misbehaviour()
        port = request.client.port if request.client is not None else None
        if step is not None and step.kind == "hold":
            response = check(request, body)
            self.received.append(
                Received(request.url.path, dict(request.headers), body, response.status_code, port)
            )
            await self._held.wait()
            return response
        response = await self._misbehave(step) if step is not None else check(request, body)
        self.received.append(
            Received(request.url.path, dict(request.headers), body, response.status_code, port)
        )
        return response

    def _app(self) -> Starlette:
        raise NotImplementedError

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        await wait_for(lambda: self._server is not None and self._server.started, timeout=10)

    async def stop(self) -> None:
        self._release.set()
        self._held.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


DISCORD_LIMITS = {"title": 256, "description": 4096, "fields": 25, "field_name": 256, "field_value": 1024}


def discord_embed_errors(body: Any) -> list[str]:
    """What Discord would refuse with 400 "Invalid Form Body" (a subset of its rules)."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    embeds = body.get("embeds") or []
    if not embeds and not body.get("content"):
        return ["Cannot send an empty message"]
    errors = []
    if len(embeds) > 10:
        errors.append("more than 10 embeds")
    for i, embed in enumerate(embeds):
        if len(embed.get("title", "")) > DISCORD_LIMITS["title"]:
            errors.append(f"embeds.{i}.title too long")
        if len(embed.get("description", "")) > DISCORD_LIMITS["description"]:
            errors.append(f"embeds.{i}.description too long")
        if not isinstance(embed.get("color", 0), int):
            errors.append(f"embeds.{i}.color is not an integer")
        fields = embed.get("fields", [])
        if len(fields) > DISCORD_LIMITS["fields"]:
            errors.append(f"embeds.{i}.fields: more than 25")
        for j, f in enumerate(fields):
            name, value = f.get("name", ""), f.get("value", "")
            if not name or len(name) > DISCORD_LIMITS["field_name"]:
                errors.append(f"embeds.{i}.fields.{j}.name must be 1-256 characters")
            if not value or len(value) > DISCORD_LIMITS["field_value"]:
                errors.append(f"embeds.{i}.fields.{j}.value must be 1-1024 characters")
    return errors


@dataclass
class FakeDiscord(_FakeServer):
    webhook_id: str = "1234567890"
    token: str = "fake-webhook-token"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/api/webhooks/{self.webhook_id}/{self.token}"

    def embeds(self) -> list[dict[str, Any]]:
        return [embed for body in self.bodies() for embed in body["embeds"]]

    def _check(self, request: Request, body: Any) -> Response:
        if request.path_params["webhook_id"] != self.webhook_id:
            return JSONResponse({"message": "Unknown Webhook", "code": 10015}, status_code=404)
        if request.path_params["token"] != self.token:
            return JSONResponse({"message": "Invalid Webhook Token", "code": 50027}, status_code=401)
        errors = discord_embed_errors(body)
        if errors:
            return JSONResponse(
                {"message": "Invalid Form Body", "code": 50035, "errors": errors}, status_code=400
            )
        return Response(status_code=204)

    def _app(self) -> Starlette:
        async def webhook(request: Request) -> Response:
            return await self._handle(request, self._check)

        return Starlette(routes=[Route("/api/webhooks/{webhook_id}/{token}", webhook, methods=["POST"])])


N8N_PATHS = ("trade", "ai-decision", "risk", "daily-report")


@dataclass
class FakeN8n(_FakeServer):
    secret: str = "n8n-shared-secret"

    def _check(self, request: Request, body: Any) -> Response:
        path = request.path_params["path"]
        if path not in N8N_PATHS:
            return JSONResponse(
                {"code": 404, "message": f'The requested webhook "POST {path}" is not registered.'},
                status_code=404,
            )
        if request.headers.get("x-webhook-secret") != self.secret:
            return JSONResponse({"ok": False, "error": "unauthorized"}, status_code=401)
        return JSONResponse({"ok": True})

    def _app(self) -> Starlette:
        async def webhook(request: Request) -> Response:
            return await self._handle(request, self._check)

        return Starlette(routes=[Route("/webhook/{path}", webhook, methods=["POST"])])


@contextlib.asynccontextmanager
async def running(server: _FakeServer) -> AsyncIterator[Any]:
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
