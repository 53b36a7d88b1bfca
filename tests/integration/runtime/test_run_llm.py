"""``coinpilot run SERVICE --llm X`` hands the agent its source as settings, not through os.environ.

The hosted service is a plug-in labelled ``agent`` (``module:agent``): it records the settings the
host built it with, then stops the process with SIGTERM as an operator would, so the command runs
for real (connect, identity check, start, stop) and returns.
"""

from __future__ import annotations

import gc
import logging
import os
import signal

import pytest
from click.testing import CliRunner

from apps.cli.main import main
from coinpilot.runtime import Runtime, ServiceDefinition
from services.agent.recording import CallSource
from services.agent.settings import AgentSettings
from tests.support.environ import environment_read_only

pytestmark = pytest.mark.nats

BUILT_WITH: list[AgentSettings | None] = []


def agent(rt: Runtime, settings: AgentSettings | None = None) -> ServiceDefinition:
    BUILT_WITH.append(settings)

    async def stop_the_process(_: Runtime) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the host's handler: stop gracefully

    return ServiceDefinition(name="agent", tasks=[stop_the_process])


@pytest.mark.parametrize(("llm", "expected"), [("replay", CallSource.REPLAY), (None, None)])
def test_run_llm_builds_the_agent_settings_without_writing_the_environment(
    nats_url: str, monkeypatch: pytest.MonkeyPatch, llm: str | None, expected: CallSource | None
) -> None:
    for name, value in {
        "COINPILOT_NATS_URL": nats_url,
        "COINPILOT_DATABASE_URL": "",
        "COINPILOT_REDIS_URL": "",
        "COINPILOT_HTTP_PORT": "0",
        "COINPILOT_LLM_MODE_SOURCE": "live",
    }.items():
        monkeypatch.setenv(name, value)
    BUILT_WITH.clear()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with environment_read_only():
            result = CliRunner().invoke(main, ["run", f"{__name__}:agent", *(["--llm", llm] if llm else [])])
    finally:
        root.handlers[:], root.level = handlers, level  # `run` configures logging for the process
        gc.unfreeze()  # and freezes the start-up heap
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(BUILT_WITH) == 1
    built = BUILT_WITH[0]
    assert (built.llm_mode_source if built is not None else None) == expected
