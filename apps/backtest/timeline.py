"""The fast path's bookkeeping: each symbol's precomputed history and the merged (time, symbol) order.

``run_batch`` walks every candle of every symbol in (open time, symbol) order; the fast path
visits only some of them but must visit those in the same order and see the same world. A
:class:`Timeline` numbers the traded candles of all symbols in that order ("merged positions");
a :class:`SymbolRun` holds one symbol's indicator history and strategy candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from apps.backtest.candidates import (
    ExitTables,
    HeldPosition,
    entry_mask,
    next_exit_candidate,
    regime_codes,
)
from apps.backtest.series import SymbolSeries
from coinpilot.contracts import MinuteCandle, Regime
from services.indicator.core import ComputedHistory, IndicatorConfig
from services.strategy.core import SymbolState
from services.strategy.params import StrategyParams

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
Ints = npt.NDArray[np.int64]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(eq=False)
class SymbolRun:
    """One symbol in a fast run: its history, where trading starts, how far the strategy got."""

    series: SymbolSeries
    history: ComputedHistory
    first: int  # index of the first traded candle (the ones before only warm the indicator)
    codes: Ints  # regime in force per candle (``candidates.REGIMES`` index)
    entries: Ints  # candle indices passing the entry pre-checks, ascending
    positions: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # merged pos per traded
    evaluated: int = -1  # last candle the strategy state reflects
    cursor: int = -1  # the candle being handled (what ``market_data`` holds up to)
    _exit_tables: dict[Regime, ExitTables] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls, series: SymbolSeries, start: datetime, config: IndicatorConfig, params: StrategyParams
    ) -> SymbolRun:
        history = ComputedHistory.compute(
            series.symbol, series.ts_ms, series.floats, series.hour_bars, config
        )
        codes = regime_codes(history.result)
        first = series.index_at(start)
        entries = np.flatnonzero(entry_mask(history.result, codes, params))
        run = cls(series, history, first, codes, entries[entries >= first])
        run.evaluated = first - 1
        return run

    def traded_hours(self) -> list[tuple[datetime, Decimal, datetime]]:
        """``(open, close, end)`` of every hour closed by a traded candle: risk's hourly input."""
        bars = self.history.bars
        return [
            (_utc(bars[k].start_ms), bars[k].close, _utc(bars[k].start_ms + HOUR_MS))
            for i in sorted(self.history.closes_at)
            if i >= self.first
            for k in self.history.closes_at[i]
        ]

    def recorded_hours(self, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
        """``(open, close)`` of the closed hours opened in ``[start, end)`` (what ``market_data``
        answers ``refit.RecordedHours`` with, for hours before the one being handled)."""
        lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        return [(_utc(b.start_ms), b.close) for b in self.history.bars if lo <= b.start_ms < hi]

    def position_of(self, i: int) -> int:
        return int(self.positions[i - self.first])

    def last_index_by(self, p: int) -> int:
        """This symbol's last candle at or before merged position ``p`` (``first - 1``: none)."""
        return self.first + int(np.searchsorted(self.positions, p, side="right")) - 1

    def next_candidate(self, state: SymbolState, start: int, params: StrategyParams) -> int | None:
        """The first candle at or after ``start`` on which the strategy core may signal."""
        n = len(self.series)
        if start >= n:
            return None
        if state.pending_order_id is not None:
            return start  # an order in flight: evaluate every candle, as the service does
        position = state.position
        if position is None:
            k = int(np.searchsorted(self.entries, start, side="left"))
            return int(self.entries[k]) if k < len(self.entries) else None
        tables = self._exit_tables.get(position.entry_regime)
        if tables is None:
            tables = self._exit_tables[position.entry_regime] = ExitTables.build(
                position.entry_regime, params
            )
        held = HeldPosition(
            float(position.avg_price),
            float(position.high_water_mark),
            position.opened_at,
            position.entry_regime,
        )
        return next_exit_candidate(
            held,
            tables,
            self.series.floats["close"],
            self.history.result.batch.rsi_14,
            self.series.ts_ms,
            self.codes,
            start,
        )

    def minutes(self, start: datetime, end: datetime) -> list[MinuteCandle]:
        """The candles ``market_data`` would hold in ``[start, end)`` while candle ``cursor`` is handled."""
        lo = self.series.index_at(start)
        hi = min(self.series.index_at(end), self.cursor + 1)
        return self.series.candles(lo, hi)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The traded candles of every symbol in (open time, symbol) order."""

    symbol: Ints  # merged position -> index into the runs
    index: Ints  # merged position -> candle index in its symbol's series
    ts_ms: Ints  # merged position -> open time
    marks: npt.NDArray[np.bool_]  # the first candle of a new hour of event time: an equity mark
    hour_closes: Ints  # merged positions whose candle closes an hour of its symbol

    @classmethod
    def merge(cls, runs: list[SymbolRun]) -> Timeline:
        """Number the traded candles; also tells each run the merged position of its candles.

        ``runs`` must be in symbol order (ties in time go to the smaller symbol, as in run_batch).
        """
        symbol = np.concatenate([np.full(len(r.series) - r.first, k) for k, r in enumerate(runs)] or [[]])
        index = np.concatenate([np.arange(r.first, len(r.series)) for r in runs] or [[]])
        ts = np.concatenate([r.series.ts_ms[r.first :] for r in runs] or [[]])
        order = np.lexsort((symbol, ts))
        symbol, index, ts = symbol[order].astype(np.int64), index[order].astype(np.int64), ts[order]
        ts = ts.astype(np.int64)
        for k, run in enumerate(runs):
            run.positions = np.flatnonzero(symbol == k)
        event_hour = (ts + MINUTE_MS) // HOUR_MS
        marks = np.ones(len(ts), dtype=bool)
        marks[1:] = event_hour[1:] != event_hour[:-1]
        closing = [
            run.positions[
                np.asarray(sorted(i for i in run.history.closes_at if i >= run.first), dtype=np.int64)
                - run.first
            ]
            for run in runs
        ]
        hour_closes = np.sort(np.concatenate(closing or [np.zeros(0, dtype=np.int64)])).astype(np.int64)
        return cls(symbol, index, ts, marks, hour_closes)

    def static_events(self) -> Ints:
        """Merged positions handled whatever the strategy does: hour closes and equity marks."""
        return np.union1d(self.hour_closes, np.flatnonzero(self.marks)).astype(np.int64)

    def ts_event(self, p: int) -> datetime:
        return _utc(int(self.ts_ms[p]) + MINUTE_MS)
