"""Run a backtest over candle files: split warm-up from the traded window, run, report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from apps.backtest.engine import BacktestResult, Engine, Progress
from apps.backtest.report import BacktestReport, build_report
from apps.backtest.series import SeriesWindow, series_by_symbol
from apps.backtest.settings import ModeSettings
from coinpilot.contracts import MinuteCandle

EnginePath = Literal["fast", "batch", "live"]

#: The regime needs 200 closed hours; a traded window starts after this much history by default.
DEFAULT_WARMUP = timedelta(hours=210)


@dataclass(frozen=True, slots=True)
class Window:
    warmup: list[MinuteCandle]
    trade: list[MinuteCandle]


def split_window(
    candles: Sequence[MinuteCandle],
    start: datetime | None,
    end: datetime | None,
    warmup: timedelta = DEFAULT_WARMUP,
) -> Window:
    """Candles before ``start`` (default: first candle + ``warmup``) only warm the indicator."""
    if not candles:
        return Window([], [])
    begin = start or candles[0].ts_open + warmup
    return Window(
        [c for c in candles if c.ts_open < begin],
        [c for c in candles if c.ts_open >= begin and (end is None or c.ts_open < end)],
    )


def to_series(window: Window) -> SeriesWindow:
    """A candle window as columns (trading starts at the first traded candle)."""
    candles = [*window.warmup, *window.trade]
    start = min((c.ts_open for c in window.trade), default=None)
    if start is None:
        return SeriesWindow({}, max((c.ts_event for c in candles), default=datetime.fromtimestamp(0, UTC)))
    return SeriesWindow(series_by_symbol(candles), start)


async def run_backtest(
    window: Window | SeriesWindow,
    *,
    label: str = "backtest",
    run_id: str = "backtest",
    strategy_config: Path | None = None,
    settings: ModeSettings | None = None,
    progress: Progress | None = None,
    records: object | None = None,
    path: EnginePath = "fast",
) -> tuple[BacktestResult, BacktestReport]:
    """``path``: ``fast`` (default) evaluates only the candles that can act; ``batch`` and ``live``
    run the core on every candle (batch indicators / candle-by-candle indicators): the reference
    paths the fast one is proven equal to. ``settings``: the services' settings of this run (a
    ``--compare-env`` variant's, the ``--llm`` source); default: the environment's, rules agent."""
    engine = Engine(run_id, strategy_config, settings=settings, records=records)  # type: ignore[arg-type]
    if isinstance(window, SeriesWindow):
        if path != "fast":
            raise ValueError("a columnar window runs on the fast path only")
        result = await engine.run_series(window, progress)
        traded = window.traded()
    elif path == "fast":
        result = await engine.run_series(to_series(window), progress)
        traded = len(window.trade)
    elif path == "batch":
        result = await engine.run_batch(window.warmup, window.trade, progress)
        traded = len(window.trade)
    else:
        engine.warm(window.warmup)
        result = await engine.run(window.trade, progress)
        traded = len(window.trade)
    report = build_report(
        label,
        result.fills,
        result.equity,
        initial_equity=result.initial_balance,
        currency=result.currency,
        candles=traded,
        chart_renderer=result.chart_renderer,
    )
    return result, report
