"""``ServiceHost.stop`` returns even when a library swallows a task's cancellation.

nats-py turns a CancelledError raised inside a request into its own TimeoutError; a background
loop that catches errors and goes on would then never see the cancellation, and a stop that only
cancels once would wait for it forever (seen in CI with the consumer-metrics loop).
"""

from __future__ import annotations

import asyncio

import pytest

from apps.host import ServiceHost
from coinpilot.runtime import Runtime, ServiceDefinition
from coinpilot.settings import CommonSettings

pytestmark = pytest.mark.nats

ROUNDS: list[int] = []


async def stubborn_loop(rt: Runtime) -> None:
    """Catches what a cancelled nats-py request raises and keeps going, like a poller would."""
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            ROUNDS.append(1)  # swallowed, as nats-py's request does
            if len(ROUNDS) >= 3:
                raise
        except Exception:
            continue


def build(rt: Runtime) -> ServiceDefinition:
    return ServiceDefinition(name="stubborn", tasks=[stubborn_loop])


async def test_stop_returns_even_when_a_background_task_swallows_its_cancellation(nats_url: str) -> None:
    settings = CommonSettings(nats_url=nats_url, database_url="", redis_url="", http_port=0)
    host = ServiceHost([f"{__name__}:build"], settings, serve_http=False)
    await host.start()
    await asyncio.sleep(0.2)
    await asyncio.wait_for(host.stop(), timeout=10)
    assert len(ROUNDS) == 3, "the cancellation was repeated until the task let it through"
    assert host.stopped.is_set()
