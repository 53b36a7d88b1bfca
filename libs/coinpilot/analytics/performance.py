"""Performance figures of an equity curve and a list of trades (BEHAVIOUR §9.1, rebuild rules).

Used by the daily report and by the backtest, so both state MDD, Sharpe and win rate the same way.
Inputs are plain numbers (``float`` or ``Decimal``); every figure comes back as a ``float``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

Number = float | int | Decimal

HOURLY_PERIODS_PER_YEAR = 8760
DAILY_PERIODS_PER_YEAR = 365


def max_drawdown_pct(equity: Sequence[Number]) -> float:
    """Largest peak-to-trough fall as a positive percent; ``[100, 110, 99, 120]`` -> 10.0.

    A running peak at or below zero has no meaningful drawdown, so such points count as 0
    instead of dividing by zero.
    """
    peak: float | None = None
    worst = 0.0
    for value in equity:
        x = float(value)
        peak = x if peak is None else max(peak, x)
        if peak > 0:
            worst = min(worst, (x - peak) / peak)
    return abs(worst) * 100.0


def simple_returns(equity: Sequence[Number]) -> list[float]:
    """Period returns ``e[i] / e[i-1] - 1`` (the first point has none); a zero base gives 0.0."""
    values = [float(v) for v in equity]
    return [(b / a - 1.0) if a != 0 else 0.0 for a, b in itertools.pairwise(values)]


def sharpe_raw(returns: Sequence[Number], risk_free: float = 0.0) -> float:
    """Per-period Sharpe ``mean(excess) / std(excess)`` with sample std (ddof=1), not annualised.

    Fewer than two returns or a zero deviation give 0.0 (the original gave NaN for one return).
    """
    excess = [float(r) - risk_free for r in returns]
    if len(excess) < 2 or max(excess) == min(excess):
        return 0.0
    mean = math.fsum(excess) / len(excess)
    variance = math.fsum((x - mean) ** 2 for x in excess) / (len(excess) - 1)
    return mean / math.sqrt(variance)


def sharpe_annualised(returns: Sequence[Number], periods_per_year: int, risk_free: float = 0.0) -> float:
    """``sharpe_raw × sqrt(periods_per_year)``: hourly returns use 8760, daily 365 (crypto never closes)."""
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
    return sharpe_raw(returns, risk_free) * math.sqrt(periods_per_year)


def win_rate(pnls: Sequence[Number]) -> float:
    """Share of trades with pnl > 0 (a zero pnl is not a win); no trades -> 0.0."""
    if not pnls:
        return 0.0
    return sum(1 for p in pnls if p > 0) / len(pnls)


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    total_return_pct: float
    mdd_pct: float
    sharpe_ratio: float
    sharpe_annualised: float
    win_rate: float
    total_trades: int


def generate_report(
    equity: Sequence[Number], trade_pnls: Sequence[Number], periods_per_year: int = HOURLY_PERIODS_PER_YEAR
) -> PerformanceReport:
    """Summarise an equity curve sampled every period and the realised pnl of each closed trade."""
    first = float(equity[0]) if equity else 0.0
    last = float(equity[-1]) if equity else 0.0
    total_return = (last / first - 1.0) * 100.0 if first > 0 else 0.0
    returns = simple_returns(equity)
    return PerformanceReport(
        total_return_pct=total_return,
        mdd_pct=max_drawdown_pct(equity),
        sharpe_ratio=sharpe_raw(returns),
        sharpe_annualised=sharpe_annualised(returns, periods_per_year),
        win_rate=win_rate(trade_pnls),
        total_trades=len(trade_pnls),
    )
