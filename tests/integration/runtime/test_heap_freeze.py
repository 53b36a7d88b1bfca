"""A service process freezes what its start-up built, so full collections stop walking it; a host
created by a test (``freeze_heap`` left off) leaves the collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from apps.host import ServiceHost
from coinpilot.runtime import Runtime, ServiceDefinition
from coinpilot.settings import CommonSettings

pytestmark = pytest.mark.nats


class Warmed:
    """Stands for the state a service's ``on_start`` builds (a symbol's window, a cache)."""

    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector could ever reclaim it


WARMED: list[Warmed] = []


async def warm(rt: Runtime) -> None:
    WARMED.append(Warmed())


def build(rt: Runtime) -> ServiceDefinition:
    return ServiceDefinition(name="warm", on_start=warm)


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process must not keep its objects frozen


def tracked(obj: object) -> bool:
    """True while the collector walks ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


@pytest.mark.parametrize("freeze_heap", [True, False])
async def test_the_start_up_heap_is_frozen_only_when_asked(
    nats_url: str, thawed: None, freeze_heap: bool
) -> None:
    settings = CommonSettings(nats_url=nats_url, database_url="", redis_url="", http_port=0)
    host = ServiceHost([f"{__name__}:build"], settings, serve_http=False, freeze_heap=freeze_heap)
    await host.start()
    try:
        warmed = WARMED[-1]
        assert tracked(warmed) is not freeze_heap
        assert (gc.get_freeze_count() > 0) is freeze_heap
        after_start = Warmed()
        assert tracked(after_start), "objects created after start-up are collected as usual"
    finally:
        await host.stop()
