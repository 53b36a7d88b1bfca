"""Which candles can change the strategy's mind: the fast backtest evaluates only those.

Most candles are a "hold": flat and the RSI never dipped, or holding and no exit level is near.
These functions find, vectorised, a *superset* of the candles on which the strategy core could
signal; the engine runs the real core (``services.strategy.core``) on exactly those and carries the
state across the others (the high-water mark is the only thing a hold changes that matters later).

* Entries: checks 1-4 of §3.2 (regime known, warmed up, RSI(14) ceiling, RSI(7) dip and recovery)
  read the same float64 indicator values the snapshot carries, so the mask is exact for them; the
  later checks (MA, Bollinger, volume) are left to the core.
* Exits: every rule of §3.4 compared in float64 with a relative margin of ``EPS`` on the loose
  side, so a candle whose exact ``Decimal`` comparison fires is always a candidate (a float of a
  price is within 1e-16 of it); the time limit is exact (integer milliseconds).

``tests/unit/backtest/test_fast_path.py`` proves the fast path's ledger equals a candle-by-candle
run of the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from coinpilot.contracts import Regime
from coinpilot.indicators import HistoryResult
from services.strategy.params import StrategyParams
from services.strategy.rules import exit_rules_for

EPS = 1e-9
MINUTE_MS = 60_000
REGIMES = tuple(Regime)
CHUNK = 4096

Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


def regime_codes(result: HistoryResult) -> npt.NDArray[np.int64]:
    """Each candle's regime in force as an index into :data:`REGIMES`."""
    code = {r: k for k, r in enumerate(REGIMES)}
    return np.array([code[r] for r in result.regime], dtype=np.int64)


def entry_mask(result: HistoryResult, codes: npt.NDArray[np.int64], params: StrategyParams) -> Bools:
    """True where checks 1-4 of the entry rules pass (a necessary condition of ENTRY_OK)."""
    batch = result.batch
    rsi14 = batch.rsi_14
    rsi7, prev = batch.rsi_7_tail[:, -1], batch.rsi_7_tail[:, -2]
    low = np.where(np.isnan(result.rsi_7_min_lookback), np.minimum(rsi7, prev), result.rsi_7_min_lookback)
    present = ~np.isnan(rsi14) & ~np.isnan(rsi7) & ~np.isnan(prev)
    warmed = batch.bars_seen >= params.warmup_bars
    mask = np.zeros(len(codes), dtype=bool)
    with np.errstate(invalid="ignore"):
        for regime, rules in params.entry.items():
            if regime is Regime.UNKNOWN:
                continue
            mask |= (
                (codes == REGIMES.index(regime))
                & warmed
                & present
                & (rsi14 <= rules.rsi_14_max)
                & (low < rules.rsi_7_trigger)
                & (rsi7 >= rules.rsi_7_recover)
            )
    return mask


@dataclass(frozen=True, slots=True)
class HeldPosition:
    """What the exit rules read of a position, as floats (the core re-checks in ``Decimal``)."""

    avg_price: float
    high_water_mark: float
    opened_at: datetime
    entry_regime: Regime


@dataclass(frozen=True, slots=True)
class ExitTables:
    """Per current-regime code, the exit levels that apply to a position of one entry regime."""

    stop: Floats  # close <= avg * stop fires the stop loss
    activation: Floats  # hwm >= avg * activation arms the trailing stop
    trail: Floats  # close <= hwm * trail fires it once armed
    take: Floats  # close >= avg * take
    overbought: Floats  # rsi > overbought ...
    min_profit: Floats  # ... and close >= avg * min_profit
    limit_ms: npt.NDArray[np.int64]  # held longer than this

    @classmethod
    def build(cls, entry_regime: Regime, params: StrategyParams) -> ExitTables:
        rules = [exit_rules_for(entry_regime, current, params) for current in REGIMES]
        return cls(
            np.array([float(1 - r.stop_loss) for r in rules]),
            np.array([float(1 + r.trailing_activation) for r in rules]),
            np.array([float(1 - r.trailing_stop) for r in rules]),
            np.array([float(1 + r.take_profit) for r in rules]),
            np.array([r.rsi_overbought for r in rules]),
            np.array([float(1 + r.rsi_exit_min_profit) for r in rules]),
            np.array([int(r.time_limit.total_seconds() * 1000) for r in rules], dtype=np.int64),
        )


def next_exit_candidate(
    position: HeldPosition,
    tables: ExitTables,
    close: Floats,
    rsi14: Floats,
    ts_ms: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    start: int,
) -> int | None:
    """The first candle at or after ``start`` on which an exit rule may fire (None: none does).

    Searched in chunks so a position closed soon does not cost a scan of the whole history.
    """
    avg = position.avg_price
    if avg <= 0:
        return None  # the core holds such a position forever (NO_ENTRY_PRICE)
    hwm = position.high_water_mark
    opened_ms = int(position.opened_at.timestamp() * 1000)
    lo, n = start, len(close)
    size = CHUNK
    while lo < n:
        hi = min(n, lo + size)
        c, k = close[lo:hi], codes[lo:hi]
        marks = np.maximum(hwm, np.maximum.accumulate(c))
        with np.errstate(invalid="ignore"):
            fires = (
                (c <= avg * tables.stop[k] * (1 + EPS))
                | (
                    (marks >= avg * tables.activation[k] * (1 - EPS))
                    & (c <= marks * tables.trail[k] * (1 + EPS))
                )
                | (c >= avg * tables.take[k] * (1 - EPS))
                | ((rsi14[lo:hi] > tables.overbought[k]) & (c >= avg * tables.min_profit[k] * (1 - EPS)))
                | (ts_ms[lo:hi] + MINUTE_MS - opened_ms > tables.limit_ms[k])
            )
        hit = np.flatnonzero(fires)
        if len(hit):
            return lo + int(hit[0])
        hwm = float(marks[-1])
        lo, size = hi, size * 2
    return None
