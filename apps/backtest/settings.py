"""Every service setting a backtest reads, built once per run: the environment plus explicit overrides.

A ``--compare-env`` variant is a second :class:`ModeSettings` built with its overrides; nothing
writes ``os.environ``, so two variants (or a backtest inside a test) never see each other's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches

from pydantic_settings import BaseSettings

from coinpilot.errors import ConfigError
from coinpilot.settings import env_names, unread_names, with_overrides
from services.agent.settings import AgentSettings
from services.executor.settings import ExecutorSettings
from services.risk.settings import RiskSettings
from services.strategy.settings import StrategySettings

#: The settings classes whose values the backtest engine uses.
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    StrategySettings,
    RiskSettings,
    ExecutorSettings,
    AgentSettings,
)


@dataclass(frozen=True, slots=True)
class ModeSettings:
    """The strategy, risk, executor and agent settings of one backtest run."""

    strategy: StrategySettings
    risk: RiskSettings
    executor: ExecutorSettings
    agent: AgentSettings

    @classmethod
    def from_environment(
        cls, overrides: Mapping[str, str] | None = None, *, llm: str = "rules"
    ) -> ModeSettings:
        """Read the environment once; ``overrides`` (environment names, e.g.
        ``COINPILOT_EXECUTOR_FEE_RATE``) outrank it, and ``llm`` is the agent's source.

        Raises ConfigError for a name no setting of the backtest reads (say, a typo) and for
        ``COINPILOT_LLM_MODE_SOURCE``, which is ``llm``'s; pydantic's ValidationError for a bad value.
        """
        overrides = dict(overrides or {})
        unread = unread_names(overrides, SETTINGS_CLASSES)
        if unread:
            raise ConfigError("; ".join(_unread_message(name) for name in unread))
        return cls(
            strategy=with_overrides(StrategySettings, overrides),
            risk=with_overrides(RiskSettings, overrides),
            executor=with_overrides(ExecutorSettings, overrides),
            agent=with_overrides(AgentSettings, overrides, llm_mode_source=llm),
        )


def _unread_message(name: str) -> str:
    known = set().union(*(env_names(c) for c in SETTINGS_CLASSES))
    close = get_close_matches(name.upper(), sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{name}: no setting of the backtest reads it{hint}"
