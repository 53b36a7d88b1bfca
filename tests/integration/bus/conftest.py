"""A client of the shared NATS server with every stream declared; tests meet on fresh symbols."""

from __future__ import annotations

import nats
import pytest

from coinpilot.bus import ensure_streams


@pytest.fixture
async def nc(nats_url: str):
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


@pytest.fixture
async def js(nc):
    js = nc.jetstream()
    await ensure_streams(js)
    return js
