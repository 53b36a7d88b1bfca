"""Replicas of one service as real processes (``python -m apps.cli.main run <service>``), each with
its own member id, metrics port and log, for the scale-out tests of the stages that share their
durables (agent, notifier). Find the replica behind a TCP connection (a fake server saw its port)
to kill the one that is mid-request."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    async def _get(self, path: str) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return await client.get(f"http://127.0.0.1:{self.port}{path}")
        except httpx.TransportError:
            return None

    async def ready(self, timeout: float = 60.0) -> None:
        async def is_ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            response = await self._get("/readyz")
            return response is not None and response.status_code == 200

        await wait_for(is_ready, timeout=timeout, interval=0.1)

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples that carry ``labels`` (0 when none)."""
        response = await self._get("/metrics")
        assert response is not None, f"{self.name} does not answer"
        total = 0.0
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def holds(self, client_port: int | None) -> bool:
        """Whether this process owns the TCP connection whose local port is ``client_port``."""
        if client_port is None:
            return False
        with contextlib.suppress(psutil.Error):
            return any(
                c.laddr and c.laddr.port == client_port
                for c in psutil.Process(self.proc.pid).net_connections()
            )
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no NAK, no ack."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def start_replica(service: str, index: int, env: dict[str, str], logs: Path) -> Replica:
    """``coinpilot run <service>`` as replica ``index`` of the worktree's code (its libs first)."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    log = (logs / f"{service}-{index}.log").open("ab")
    child = {
        **os.environ,
        **env,
        "PYTHONPATH": f"{REPO / 'libs'}{os.pathsep}{REPO}",
        "COINPILOT_MEMBER_ID": f"{service}-{index}",
        "COINPILOT_HTTP_HOST": "127.0.0.1",
        "COINPILOT_HTTP_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", "run", service],
        env=child,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Replica(f"{service}-{index}", port, proc, log)


def holder(replicas: list[Replica], client_port: int | None) -> Replica:
    """The replica that sent the request a fake server saw from ``client_port``."""
    found = [r for r in replicas if r.holds(client_port)]
    assert len(found) == 1, f"port {client_port} is held by {[r.name for r in found]}"
    return found[0]
