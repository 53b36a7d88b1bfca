"""What a service module hands the runtime: its consumers, background tasks and hooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coinpilot.bus import Bus, Consumer
from coinpilot.runtime.owned import OwnedSymbols
from coinpilot.settings import CommonSettings

if TYPE_CHECKING:
    from coinpilot.cache import Cache
    from coinpilot.db import Database


@dataclass
class Runtime:
    """Everything a service's ``build`` may use. Connections exist when ``build`` is called."""

    service: str
    settings: CommonSettings
    bus: Bus
    db: Database | None
    cache: Cache | None
    log: logging.Logger
    extras: dict[str, Any] = field(default_factory=dict)
    # Set by the host when the service runs partitioned (COINPILOT_PARTITIONS > 1): the symbols of
    # the partitions this replica owns now, for the service's own tasks (runtime/owned.py). None:
    # not partitioned, the replica has every symbol of ``settings.symbols``.
    owned: OwnedSymbols | None = None


Task = Callable[[Runtime], Awaitable[None]]
Hook = Callable[[Runtime], Awaitable[None]]


@dataclass
class ServiceDefinition:
    name: str
    consumers: list[Consumer] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    on_start: Hook | None = None
    on_stop: Hook | None = None
    # Consumers keyed by symbol (subject's last token) that may run partitioned over replicas
    # (COINPILOT_PARTITIONS > 1, runtime/partitioned.py); ``forget`` drops the per-symbol memory
    # of symbols whose partition this replica gives up or takes.
    partition_by_symbol: bool = False
    forget: Callable[[frozenset[str]], None] | None = None
