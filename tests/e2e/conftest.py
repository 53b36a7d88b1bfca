"""End-to-end tests get a NATS of their own: lockstep waits for EVERY durable consumer to drain,
so durables other tests left behind with a backlog must not be on the same server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import NatsProcess


@pytest.fixture
def nats_url() -> Iterator[str]:
    server = NatsProcess()
    server.start()
    yield server.url
    server.close()
