"""Pre-filter (BEHAVIOUR §5.1; acceptance case I)."""

from __future__ import annotations

import pytest

from coinpilot.contracts import Regime, RejectReason
from services.agent.context import BearFeatures
from services.agent.prefilter import PrefilterParams, should_run_ai_analysis

YAML = PrefilterParams()


@pytest.mark.parametrize(
    ("regime", "bear", "context_len", "expected"),
    [
        pytest.param(
            Regime.BEAR,
            BearFeatures(0.5, 1.2, 1.1),
            6,
            RejectReason.AI_CONTEXT_SHORT,
            id="bear-context-6-short",
        ),
        pytest.param(
            Regime.BEAR, BearFeatures(0.9, 0.2, 1.0), 24, RejectReason.FALLING_KNIFE, id="falling-knife"
        ),
        pytest.param(Regime.BEAR, BearFeatures(0.5, 1.2, 1.1), 24, None, id="bear-healthy-runs"),
        pytest.param(
            Regime.BEAR,
            BearFeatures(0.5, 1.2, 0.6),
            24,
            RejectReason.VOLUME_RECOVERY_LOW,
            id="volume-recovery-low",
        ),
        pytest.param(Regime.BULL, BearFeatures(0.99, 0.0, 0.1), 24, None, id="bull-ignores-bear-features"),
        pytest.param(
            Regime.BEAR,
            BearFeatures(0.85, 0.39, 1.0),
            12,
            RejectReason.FALLING_KNIFE,
            id="boundaries-inclusive-down",
        ),
        pytest.param(
            Regime.BEAR, BearFeatures(0.85, 0.4, 0.7), 12, None, id="rebound-and-volume-at-threshold-run"
        ),
        pytest.param(
            Regime.SIDEWAYS, None, 11, RejectReason.AI_CONTEXT_SHORT, id="sideways-context-11-short"
        ),
        pytest.param(Regime.BEAR, None, 24, None, id="bear-without-features-uses-defaults"),
    ],
)
def test_prefilter_table(
    regime: Regime, bear: BearFeatures | None, context_len: int, expected: RejectReason | None
) -> None:
    assert should_run_ai_analysis(regime, bear, context_len, YAML).reason is expected


def test_disabled_prefilter_always_runs_the_ai() -> None:
    off = PrefilterParams(enabled=False)
    assert should_run_ai_analysis(Regime.BEAR, BearFeatures(1.0, 0.0, 0.0), 0, off).runs_ai


def test_skip_messages_carry_the_numbers() -> None:
    knife = should_run_ai_analysis(Regime.BEAR, BearFeatures(0.9, 0.2, 1.0), 24, YAML)
    volume = should_run_ai_analysis(Regime.BEAR, BearFeatures(0.5, 1.2, 0.55), 24, YAML)
    short = should_run_ai_analysis(Regime.BULL, None, 6, YAML)
    assert knife.message == "Falling knife pre-filter: downtrend=0.90, rebound=0.20%"
    assert volume.message == "Volume recovery pre-filter: 0.55 < 0.70"
    assert short.message == "AI context insufficient (6 < 12)"
