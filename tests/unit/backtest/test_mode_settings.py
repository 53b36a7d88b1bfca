"""A backtest's settings are built explicitly per run: overrides take effect, os.environ is never written."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.backtest.run import run_backtest, split_window
from apps.backtest.settings import ModeSettings
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.errors import ConfigError
from services.agent.recording import CallSource
from tests.support.environ import EnvironmentWritten, environment_read_only

READ = (
    "COINPILOT_EXECUTOR_FEE_RATE",
    "COINPILOT_EXECUTOR_INITIAL_BALANCE",
    "COINPILOT_RISK_PAPER_INITIAL_BALANCE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*READ, "PAPER_BALANCE", "COINPILOT_STRATEGY_WARMUP_BARS", "LLM_MODE", "COINPILOT_LLM_MODE"):
        monkeypatch.delenv(name, raising=False)


def test_each_override_lands_on_the_settings_of_every_service_that_reads_it() -> None:
    mode = ModeSettings.from_environment(
        {
            "COINPILOT_EXECUTOR_FEE_RATE": "0",
            "COINPILOT_EXECUTOR_INITIAL_BALANCE": "5000000",
            "COINPILOT_STRATEGY_WARMUP_BARS": "60",
            "LLM_MODE": "prod",
        }
    )
    assert mode.executor.fee_rate == 0
    assert mode.executor.initial_balance == mode.risk.paper_initial_balance == Decimal(5_000_000)
    assert mode.strategy.warmup_bars == 60
    assert mode.agent.llm_mode == "prod"


def test_without_overrides_the_settings_are_the_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINPILOT_EXECUTOR_FEE_RATE", "0.001")
    monkeypatch.setenv("COINPILOT_LLM_MODE_SOURCE", "live")
    mode = ModeSettings.from_environment(llm="replay")
    assert mode.executor.fee_rate == Decimal("0.001")
    assert mode.agent.llm_mode_source is CallSource.REPLAY
    assert ModeSettings.from_environment().agent.llm_mode_source is CallSource.RULES


def test_a_name_no_setting_reads_is_an_error_that_suggests_the_near_one() -> None:
    with pytest.raises(
        ConfigError, match=r"COINPILOT_EXECUTOR_FEES: no setting .* COINPILOT_EXECUTOR_FEE_RATE\?"
    ):
        ModeSettings.from_environment({"COINPILOT_EXECUTOR_FEES": "0"})
    with pytest.raises(ConfigError, match="COINPILOT_STRATEGY_CONFIG: no setting of the backtest reads it"):
        ModeSettings.from_environment({"COINPILOT_STRATEGY_CONFIG": "other.yaml"})


def test_the_agent_source_is_the_llm_option_not_an_override() -> None:
    with pytest.raises(ConfigError, match="COINPILOT_LLM_MODE_SOURCE: set explicitly"):
        ModeSettings.from_environment({"COINPILOT_LLM_MODE_SOURCE": "replay"})


def test_the_read_only_environment_catches_a_write() -> None:
    """The guard the next test relies on: the old ``environment()`` wrote like this."""
    import os

    with environment_read_only(), pytest.raises(EnvironmentWritten):
        os.environ.update({"COINPILOT_EXECUTOR_FEE_RATE": "0"})


async def test_a_compare_variant_takes_its_overrides_without_writing_the_environment() -> None:
    candles = load_candles(sample_files())
    window = split_window(candles, datetime(2023, 3, 27, tzinfo=UTC), datetime(2023, 3, 28, 12, tzinfo=UTC))
    with environment_read_only():
        base, base_report = await run_backtest(window, label="base", settings=ModeSettings.from_environment())
        fee_free = ModeSettings.from_environment({"COINPILOT_EXECUTOR_FEE_RATE": "0"})
        compare, compare_report = await run_backtest(window, label="compare", settings=fee_free)
        _, again_report = await run_backtest(window, label="again")
    assert base.fills and base_report.fees > 0
    assert compare_report.fees == 0 and compare.equity[-1].equity > base.equity[-1].equity
    assert again_report.fees == base_report.fees  # the variant left nothing behind
