"""GARCH(1,1) volatility of hourly returns and the order-size multiplier (BEHAVIOUR §4.9, rebuild).

The original fitted 1-minute BTC returns against a 2 %-per-minute threshold that never fired. Here
each symbol is fitted on its own hourly log returns in percent (window 2160 hours, at least 500
returns), so the forecast ``sigma`` is "percent per hour" and the threshold is stated in the same
unit (``vol_threshold_hourly_pct``). A fit older than ``stale_after`` is ignored: the multiplier
falls back to 1.0, as it does when there is no state at all.

Everything here is a pure function of its arguments (``arch`` is deterministic for given data);
reading and writing the Redis state is the risk service's job.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import numpy as np

from coinpilot.clock import ensure_utc

__all__ = [
    "VolatilityFitError",
    "VolatilityState",
    "VolatilityStatus",
    "fit_volatility",
    "forecast_sigma_pct",
    "load_garch",
    "log_returns_pct",
    "volatility_multiplier",
]

ONE = Decimal(1)


class VolatilityFitError(ValueError):
    """Raised when a fit cannot give a usable forecast (too few returns, no convergence, NaN)."""


class VolatilityStatus(StrEnum):
    """Why the multiplier is what it is; a bounded metric label."""

    HIGH = "HIGH"
    NORMAL = "NORMAL"
    MISSING = "MISSING"
    STALE = "STALE"
    NOT_YET_VALID = "NOT_YET_VALID"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class VolatilityState:
    """One fit: the JSON kept in Redis ``coinpilot:volatility_state:<SYM>`` (original fields kept)."""

    symbol: str
    current_volatility: float
    is_high_volatility: bool
    as_of: datetime
    returns_used: int
    threshold_pct: float

    def to_json(self) -> str:
        as_of = ensure_utc(self.as_of).isoformat()
        return json.dumps(
            {
                "symbol": self.symbol,
                "current_volatility": self.current_volatility,
                "is_high_volatility": self.is_high_volatility,
                "timestamp": as_of,
                "as_of": as_of,
                "returns_used": self.returns_used,
                "threshold_pct": self.threshold_pct,
                "unit": "percent_per_hour",
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> VolatilityState:
        """Parse the Redis JSON; raises ValueError on anything malformed."""
        try:
            raw = json.loads(text)
            return cls(
                symbol=str(raw["symbol"]),
                current_volatility=float(raw["current_volatility"]),
                is_high_volatility=bool(raw["is_high_volatility"]),
                as_of=ensure_utc(datetime.fromisoformat(raw["as_of"])),
                returns_used=int(raw.get("returns_used", 0)),
                threshold_pct=float(raw.get("threshold_pct", math.nan)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad volatility state: {exc}") from exc


def log_returns_pct(closes: Sequence[float] | Sequence[Decimal]) -> list[float]:
    """``100 * ln(c_t / c_{t-1})`` for consecutive closes (the first has no return)."""
    values = np.asarray([float(c) for c in closes], dtype=float)
    if values.size < 2:
        return []
    if np.any(values <= 0) or not np.all(np.isfinite(values)):
        raise VolatilityFitError("closes must be positive and finite")
    return (100.0 * np.diff(np.log(values))).tolist()


def load_garch() -> None:
    """Import ``arch`` now (with scipy and pandas: ~1.3 s of CPU here).

    The module imports it lazily, so nothing but the risk service pays for it. The risk service
    calls this at start-up: imported by the first fit instead, in its worker thread, the import
    holds the interpreter lock in 5 ms slices for over a second, and every handler of the service
    is slowed meanwhile (``bench/bench_refit.py``: a handler of 8 PostgreSQL round trips, 0.5 ms
    alone, p50 ~5, p90 ~20 and max 64-94 ms for 1.3-1.5 s; beside a fit whose library is already
    loaded, 20-33 ms, p50 ~4 and max under 8 ms).
    """
    import arch  # noqa: F401  (the import is the point)


def forecast_sigma_pct(returns: Sequence[float]) -> float:
    """One-step-ahead standard deviation of a GARCH(1,1) (constant mean, normal) fitted to ``returns``.

    The result is in the unit of the returns (percent per hour for hourly percent returns).
    """
    from arch import arch_model  # imported here: only the risk service needs it (see load_garch)

    data = np.asarray(returns, dtype=float)
    if data.size < 10 or not np.all(np.isfinite(data)):
        raise VolatilityFitError(f"need at least 10 finite returns, got {data.size}")
    if float(np.std(data)) == 0.0:
        raise VolatilityFitError("returns have zero variance")
    model = arch_model(data, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arch reports convergence through convergence_flag too
        result = model.fit(disp="off", show_warning=False)
    if result.convergence_flag != 0:
        raise VolatilityFitError(f"GARCH optimiser did not converge (flag {result.convergence_flag})")
    variance = float(result.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0])
    if not math.isfinite(variance) or variance < 0:
        raise VolatilityFitError(f"forecast variance is not usable: {variance}")
    return math.sqrt(variance)


def fit_volatility(
    symbol: str,
    closes: Sequence[float] | Sequence[Decimal],
    as_of: datetime,
    *,
    threshold_pct: float,
    window: int = 2160,
    min_returns: int = 500,
) -> VolatilityState:
    """Fit the last ``window`` hourly returns of ``closes`` (oldest first) and classify the forecast.

    ``as_of`` is the close time of the newest hourly candle used. High volatility is strictly
    ``sigma > threshold_pct``.
    """
    returns = log_returns_pct(closes)[-window:]
    if len(returns) < min_returns:
        raise VolatilityFitError(f"{len(returns)} hourly returns < {min_returns} required")
    sigma = forecast_sigma_pct(returns)
    return VolatilityState(
        symbol=symbol,
        current_volatility=sigma,
        is_high_volatility=sigma > threshold_pct,
        as_of=ensure_utc(as_of),
        returns_used=len(returns),
        threshold_pct=threshold_pct,
    )


def volatility_multiplier(
    state: VolatilityState | None,
    now: datetime,
    *,
    stale_after: timedelta,
    high_multiplier: Decimal,
) -> tuple[Decimal, VolatilityStatus]:
    """The size multiplier at event time ``now``: ``high_multiplier`` only for a fresh high fit.

    A missing state, a fit older than ``stale_after`` or one made after ``now`` (a replay reading
    a later fit) gives 1.0, with the status saying which.
    """
    if state is None:
        return ONE, VolatilityStatus.MISSING
    age = ensure_utc(now) - state.as_of
    if age < timedelta(0):
        return ONE, VolatilityStatus.NOT_YET_VALID
    if age > stale_after:
        return ONE, VolatilityStatus.STALE
    if state.is_high_volatility:
        return high_multiplier, VolatilityStatus.HIGH
    return ONE, VolatilityStatus.NORMAL
