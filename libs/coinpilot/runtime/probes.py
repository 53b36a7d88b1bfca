"""The HTTP side of a service: ``/metrics``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]
Role = Callable[[], str | None]


def build_probe_app(ready: ReadyCheck, role: Role | None = None) -> Starlette:
    """``role``: a hot standby's ``active``/``standby`` (both ready: a standby is connected and
    can take over), shown in ``/readyz``'s body."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        checks = await ready()
        ok = all(checks.values())
        body: dict[str, object] = {"ready": ok, "checks": checks}
        current = role() if role is not None else None
        if current is not None:
            body["role"] = current
        return JSONResponse(body, status_code=200 if ok else 503)

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)]
    )
