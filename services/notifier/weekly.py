"""Weekly exit-report tuning suggestions (BEHAVIOUR §9.2), pure, in the original order of rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MIN_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class ExitStats:
    """Averages of one exit-reason bucket; ``None`` when the bucket has no such data yet."""

    avg_post_4h_pct: float | None = None
    avg_post_24h_pct: float | None = None


def _above(value: float | None, limit: float) -> bool:
    return value is not None and value > limit


def _below(value: float | None, limit: float) -> bool:
    return value is not None and value < limit


def tuning_suggestions(
    total_sells: int,
    by_exit_reason: Mapping[str, ExitStats],
    early_exit_rate_by_regime: Mapping[str, float | None],
    min_samples: int = MIN_SAMPLES,
) -> list[str]:
    """What to consider changing, or why nothing can be said yet."""
    if total_sells < min_samples:
        return [f"data shortage: SELL {total_sells} (min {min_samples} required)"]
    none = ExitStats()
    out = []
    if _above(by_exit_reason.get("TRAILING_STOP", none).avg_post_24h_pct, 3.0):
        out.append("widen trailing_stop_pct by +0.5 pp")
    if _above(by_exit_reason.get("STOP_LOSS", none).avg_post_4h_pct, 1.0):
        out.append("consider relaxing stop_loss_pct")
    if _above(by_exit_reason.get("TAKE_PROFIT", none).avg_post_4h_pct, 2.0):
        out.append("consider raising take_profit_pct")
    if _below(by_exit_reason.get("TIME_LIMIT", none).avg_post_24h_pct, -2.0):
        out.append("keep TIME_LIMIT as is")
    for regime, rate in early_exit_rate_by_regime.items():
        if rate is not None and rate > 0.40:
            out.append(f"{regime} early-exit rate {rate * 100:.1f} % — review exit params")
    return out or ["no adjustment signal; keep parameters, collect more data"]
