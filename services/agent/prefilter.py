"""Pre-filter (BEHAVIOUR §5.1): skip the model when the answer is already clear or the data too thin."""

from __future__ import annotations

from dataclasses import dataclass

from coinpilot.contracts import Regime, RejectReason
from services.agent.context import BearFeatures


@dataclass(frozen=True, slots=True)
class PrefilterParams:
    """From the regime entry block. Units: ratios are fractions, ``min_rebound_pct`` is percent."""

    enabled: bool = True
    min_context_candles: int = 12
    max_downtrend_ratio: float = 0.85
    min_rebound_pct: float = 0.4
    min_volume_recovery_ratio: float = 0.7


@dataclass(frozen=True, slots=True)
class PrefilterVerdict:
    reason: RejectReason | None = None
    message: str = ""

    @property
    def runs_ai(self) -> bool:
        return self.reason is None


RUN = PrefilterVerdict()


def should_run_ai_analysis(
    regime: Regime, bear: BearFeatures | None, context_len: int, params: PrefilterParams
) -> PrefilterVerdict:
    """Decide whether a proposed BUY is worth a model call; a skip carries its reason code."""
    if not params.enabled:
        return RUN
    if context_len < params.min_context_candles:
        return PrefilterVerdict(
            RejectReason.AI_CONTEXT_SHORT,
            f"AI context insufficient ({context_len} < {params.min_context_candles})",
        )
    if regime is not Regime.BEAR:
        return RUN
    features = bear or BearFeatures()
    down = features.downtrend_ratio_8h
    rebound = features.rebound_from_recent_low_pct_8h
    recovery = features.volume_recovery_ratio_8h
    if down >= params.max_downtrend_ratio and rebound < params.min_rebound_pct:
        return PrefilterVerdict(
            RejectReason.FALLING_KNIFE,
            f"Falling knife pre-filter: downtrend={down:.2f}, rebound={rebound:.2f}%",
        )
    if recovery < params.min_volume_recovery_ratio:
        return PrefilterVerdict(
            RejectReason.VOLUME_RECOVERY_LOW,
            f"Volume recovery pre-filter: {recovery:.2f} < {params.min_volume_recovery_ratio:.2f}",
        )
    return RUN
