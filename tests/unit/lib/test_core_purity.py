"""Every service's ``core.py`` is pure: importing it loads no I/O library.

ARCHITECTURE principle 3 (pure core, thin edges): a core is a function of (state, message) with no
I/O, so the backtest, a stage replay and a unit test run it without servers. Each import runs in a
fresh interpreter, because this test process has long since imported every client library.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coinpilot.service_names import SERVICES

# Clients of the servers and of the outside world, and the metrics registry (a process global).
IO_MODULES = (
    "asyncpg",
    "sqlalchemy",
    "redis",
    "nats",
    "faststream",
    "httpx",
    "anthropic",
    "openai",
    "prometheus_client",
    "uvicorn",
)

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
roots = {name.split(".", 1)[0] for name in sys.modules}
print(json.dumps(sorted(roots.intersection(json.loads(sys.argv[2])))))
"""


def io_modules_loaded_by(module: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(IO_MODULES)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_core_imports_no_io_library(service: str) -> None:
    assert io_modules_loaded_by(f"services.{service}.core") == []


def test_the_probe_sees_an_io_import() -> None:
    """The check itself can fail: the Redis client module does load redis."""
    assert io_modules_loaded_by("coinpilot.cache.client") == ["prometheus_client", "redis"]


@pytest.mark.parametrize(
    "module",
    [
        "services.risk.handlers",
        "services.strategy.handlers",
        "services.executor.handler",
        "services.indicator.handlers",
        "apps.backtest.engine",
    ],
)
def test_the_handlers_every_mode_runs_load_no_store_client(module: str) -> None:
    """The handlers the backtest runs over memory (and the engine that runs them) count with
    prometheus_client but load no database, cache, bus or model client: a backtest pays none."""
    assert io_modules_loaded_by(module) == ["prometheus_client"]


@pytest.mark.parametrize(
    "module",
    [
        "services.risk.stores",
        "services.strategy.memory_book",
        "services.executor.memory_book",
        "services.indicator.memory_store",
    ],
)
def test_the_memory_stores_load_no_io_library(module: str) -> None:
    assert io_modules_loaded_by(module) == []
