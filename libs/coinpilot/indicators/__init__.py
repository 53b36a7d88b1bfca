"""Pure indicator maths shared by the indicator service and the backtest (see README.md here).

Every value is a pure function of a bounded window: the last 200 rows (closed 1m candles and
the no-trade minutes filled in short gaps) for the 1m indicators, the last 200 closed hourly
closes for the regime. Three paths compute them and agree bit for bit: ``MinuteWindow.push``
(live), ``MinuteWindow.from_rows`` (restart) and ``compute_history`` (batch over a whole file).
"""

from coinpilot.indicators.batch import (
    FilledRows,
    HistoryResult,
    MinuteBatch,
    compute_history,
    fill_gaps,
    minute_batch,
    param_values,
)
from coinpilot.indicators.hourly import (
    HOUR_MS,
    MINUTE_MS,
    HourBar,
    RegimeReading,
    classify_regime,
    closes_hour,
    diff_pct,
    hour_start,
    regime_from_closes,
    resample_hourly,
)
from coinpilot.indicators.kernels import (
    InsufficientDataError,
    bb_touch_recovery,
    bollinger,
    mean_last,
    price_changes,
    recent_vol_ratios,
    rsi_min_lookback,
    rsi_series,
    rsi_tail,
    rsi_tail_and_last,
    rsi_value,
    sample_std_last,
    sma,
    vol_ratio,
    vol_ratio_series,
)
from coinpilot.indicators.params import (
    DEFAULT_PARAMS,
    DEFAULT_REGIME_PARAMS,
    DEFAULT_REGIME_RULE,
    MAX_FILLED_GAP,
    WINDOW,
    IndicatorParams,
    RegimeParams,
    RegimeRule,
)
from coinpilot.indicators.window import MinuteValues, MinuteWindow, fill_rows

__all__ = [
    "DEFAULT_PARAMS",
    "DEFAULT_REGIME_PARAMS",
    "DEFAULT_REGIME_RULE",
    "HOUR_MS",
    "MAX_FILLED_GAP",
    "MINUTE_MS",
    "WINDOW",
    "FilledRows",
    "HistoryResult",
    "HourBar",
    "IndicatorParams",
    "InsufficientDataError",
    "MinuteBatch",
    "MinuteValues",
    "MinuteWindow",
    "RegimeParams",
    "RegimeReading",
    "RegimeRule",
    "bb_touch_recovery",
    "bollinger",
    "classify_regime",
    "closes_hour",
    "compute_history",
    "diff_pct",
    "fill_gaps",
    "fill_rows",
    "hour_start",
    "mean_last",
    "minute_batch",
    "param_values",
    "price_changes",
    "recent_vol_ratios",
    "regime_from_closes",
    "resample_hourly",
    "rsi_min_lookback",
    "rsi_series",
    "rsi_tail",
    "rsi_tail_and_last",
    "rsi_value",
    "sample_std_last",
    "sma",
    "vol_ratio",
    "vol_ratio_series",
]
