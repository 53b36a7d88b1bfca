"""A collector replica as a process of its own, for a kill -9:
``coinpilot run tests.integration.collector.replica_process:collector``.

The real collector, on the test's sped-up clock: ``COINPILOT_TEST_CLOCK_START`` (ISO time),
``_SPEED`` and ``_T0`` (the test's ``time.monotonic()`` at the start; CLOCK_MONOTONIC is the
machine's, so this process, the test and its fake Upbit share one time). Everything else is the
collector's ordinary environment.
"""

from __future__ import annotations

import os
from datetime import datetime

from coinpilot.runtime import Runtime, ServiceDefinition
from services.collector.app import build
from tests.integration.collector.fake_upbit import ScaledClock


def collector(rt: Runtime) -> ServiceDefinition:
    clock = ScaledClock(
        datetime.fromisoformat(os.environ["COINPILOT_TEST_CLOCK_START"]),
        float(os.environ["COINPILOT_TEST_CLOCK_SPEED"]),
        t0=float(os.environ["COINPILOT_TEST_CLOCK_T0"]),
    )
    return build(rt, clock=clock)
