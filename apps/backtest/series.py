"""Candles as columns: what the fast backtest path reads instead of one pydantic model per candle.

A :class:`SymbolSeries` keeps each price column twice: the exact text the file (or the database's
``Decimal``) gave, from which a :class:`MinuteCandle` is built only when a message needs one, and
float64 for the vectorised indicators. ``float(Decimal(text))`` and polars' parse of the same text
are both correctly rounded, so the floats are the ones the live indicator computes with. The text
read from a file stays a polars column, not a list of Python strings: but for the volumes (summed
into hourly bars), a run reads only a few values of each column.

Every series is screened by the candle rules of the services (``coinpilot.market_checks``,
vectorised) as it is built: a candle a service would quarantine is left out and listed in
``quarantined``, so the backtest decides on exactly the candles the services would use.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from coinpilot.candle_files import read_frames
from coinpilot.contracts import MinuteCandle
from coinpilot.indicators.hourly import HourBar, hour_spans, hour_start
from coinpilot.market_checks import CandleLimits, CandleRule, CandleSettings, screen_columns

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
log = logging.getLogger("coinpilot.backtest")
ONE_MINUTE = timedelta(minutes=1)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _extreme(
    values: npt.NDArray[np.float64], text: Sequence[str], a: int, b: int, *, highest: bool
) -> Decimal:
    """The first maximal (or minimal) ``Decimal`` of ``text[a:b]``, as ``HourBar.add`` keeps it.

    Floats of distinct decimals can only tie when the text has more digits than a float holds;
    then the decimals of the tied floats decide (``float`` is monotonic: no other one can win).
    """
    segment = values[a:b]
    j = int(segment.argmax() if highest else segment.argmin())
    ties = np.flatnonzero(segment == segment[j])
    if len(ties) == 1:
        return Decimal(text[a + j])
    decimals = [Decimal(text[a + k]) for k in ties.tolist()]
    return max(decimals) if highest else min(decimals)


@dataclass(frozen=True, slots=True)
class SymbolSeries:
    """One symbol's candles, strictly increasing in open time."""

    symbol: str
    ts_ms: npt.NDArray[np.int64]
    text: Mapping[str, Sequence[str]]  # column -> exact decimal text per candle (a list or a polars column)
    floats: dict[str, npt.NDArray[np.float64]]  # column -> float64 per candle
    quarantined: tuple[tuple[int, CandleRule], ...] = ()  # (open time ms, rule) of the candles left out

    def __len__(self) -> int:
        return len(self.ts_ms)

    def candle(self, i: int) -> MinuteCandle:
        """The ``i``-th candle as the contract (equal to what ``load_candles`` builds)."""
        start = datetime.fromtimestamp(int(self.ts_ms[i]) / 1000, UTC)
        text = self.text
        return MinuteCandle(
            symbol=self.symbol,
            ts_open=start,
            ts_event=start + ONE_MINUTE,
            open=Decimal(text["open"][i]),
            high=Decimal(text["high"][i]),
            low=Decimal(text["low"][i]),
            close=Decimal(text["close"][i]),
            volume=Decimal(text["volume"][i]),
        )

    def price(self, column: str, i: int) -> Decimal:
        """The ``i``-th candle's ``column`` (open, high, low, close, volume) as the contract holds it."""
        return Decimal(self.text[column][i])

    def highest(self, column: str, lo: int, hi: int) -> Decimal:
        """``max`` of the ``Decimal`` prices of candles ``lo .. hi - 1`` (the first one, on ties)."""
        return _extreme(self.floats[column], self.text[column], lo, hi, highest=True)

    def ts_event(self, i: int) -> datetime:
        return datetime.fromtimestamp(int(self.ts_ms[i]) / 1000, UTC) + ONE_MINUTE

    def hour_bars(self, count: int) -> list[HourBar[Decimal]]:
        """The first ``count`` hourly buckets with ``Decimal`` prices: ``resample_hourly`` of the
        candles, built from the text (high/low picked by the floats when no two of them tie)."""
        first, end = hour_spans(self.ts_ms)
        text, floats = self.text, self.floats
        volume = list(text["volume"])  # every one is summed
        bars = []
        for a, b in zip(first[:count].tolist(), end[:count].tolist(), strict=True):
            volumes = [Decimal(v) for v in volume[a:b]]
            bars.append(
                HourBar(
                    hour_start(int(self.ts_ms[a])),
                    Decimal(text["open"][a]),
                    _extreme(floats["high"], text["high"], a, b, highest=True),
                    _extreme(floats["low"], text["low"], a, b, highest=False),
                    Decimal(text["close"][b - 1]),
                    sum(volumes[1:], volumes[0]),
                    b - a,
                )
            )
        return bars

    def traded_hours(self, start: datetime) -> int:
        """How many hours hold a candle opening at or after ``start``."""
        traded = self.ts_ms[self.index_at(start) :]
        return len(np.unique(traded // 3_600_000))

    def hours_before(self, start: datetime) -> int:
        """How many hours hold a candle opening before ``start``."""
        return len(np.unique(self.ts_ms[: self.index_at(start)] // 3_600_000))

    def candles(self, lo: int, hi: int) -> list[MinuteCandle]:
        return [self.candle(i) for i in range(lo, hi)]

    def index_at(self, ts: datetime) -> int:
        """The number of candles that opened before ``ts``."""
        return int(np.searchsorted(self.ts_ms, _ms(ts), side="left"))

    @classmethod
    def from_frame(cls, symbol: str, frame: pl.DataFrame, limits: CandleLimits | None = None) -> SymbolSeries:
        """From a frame with ``ts`` (int ms) and the price columns as text, sorted by ``ts``;
        screened (see the module)."""
        floats = frame.select(pl.col(c).cast(pl.Float64) for c in PRICE_COLUMNS)
        series = cls(
            symbol,
            frame["ts"].to_numpy().astype(np.int64),
            {c: frame[c] for c in PRICE_COLUMNS},
            {c: floats[c].to_numpy() for c in PRICE_COLUMNS},
        )
        return series.screened(limits)

    @classmethod
    def from_candles(
        cls, symbol: str, candles: Sequence[MinuteCandle], limits: CandleLimits | None = None
    ) -> SymbolSeries:
        """From contracts (e.g. read from ``market_data``); ``str(Decimal)`` round-trips exactly.
        Screened (see the module)."""
        text = {c: [str(getattr(candle, c)) for candle in candles] for c in PRICE_COLUMNS}
        series = cls(
            symbol,
            np.array([_ms(c.ts_open) for c in candles], dtype=np.int64),
            text,
            {c: np.array([float(Decimal(v)) for v in values]) for c, values in text.items()},
        )
        return series.screened(limits)

    def screened(self, limits: CandleLimits | None = None) -> SymbolSeries:
        """This series without the candles the services would quarantine (event time only)."""
        refused = screen_columns(self.ts_ms, self.floats, limits or CandleSettings().limits())
        if not refused:
            return self
        first = datetime.fromtimestamp(int(self.ts_ms[refused[0][0]]) / 1000, UTC)
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(Counter(r for _, r in refused).items()))
        log.warning(  # printed by `coinpilot backtest` (no handler: the last-resort one, stderr)
            "%s: %d candles quarantined as the services would (%s; the first at %s)",
            self.symbol,
            len(refused),
            rules,
            f"{first:%Y-%m-%dT%H:%M}Z",
        )
        keep = np.ones(len(self.ts_ms), dtype=bool)
        keep[[i for i, _ in refused]] = False
        text: dict[str, Sequence[str]] = {}
        for c, column in self.text.items():
            if isinstance(column, pl.Series):
                text[c] = column.filter(pl.Series(keep))
            else:
                text[c] = [value for value, kept in zip(column, keep.tolist(), strict=True) if kept]
        return SymbolSeries(
            self.symbol,
            self.ts_ms[keep],
            text,
            {c: values[keep] for c, values in self.floats.items()},
            (*self.quarantined, *((int(self.ts_ms[i]), rule) for i, rule in refused)),
        )


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """Every symbol's candles; those opening before ``start`` only warm the indicator."""

    series: dict[str, SymbolSeries]
    start: datetime

    def traded(self) -> int:
        return sum(len(s) - s.index_at(self.start) for s in self.series.values())

    def warmup(self) -> int:
        return sum(s.index_at(self.start) for s in self.series.values())

    def quarantined(self) -> int:
        """Candles left out because a service would quarantine them (``SymbolSeries.quarantined``)."""
        return sum(len(s.quarantined) for s in self.series.values())


def series_by_symbol(candles: Sequence[MinuteCandle]) -> dict[str, SymbolSeries]:
    grouped: dict[str, list[MinuteCandle]] = {}
    for candle in candles:
        grouped.setdefault(candle.symbol, []).append(candle)
    return {
        symbol: SymbolSeries.from_candles(symbol, sorted(group, key=lambda c: c.ts_open))
        for symbol, group in sorted(grouped.items())
    }


def load_series(
    paths: Sequence[Path],
    *,
    symbols: Sequence[str] | None = None,
    end: datetime | None = None,
    rename: dict[str, str] | None = None,
) -> dict[str, SymbolSeries]:
    """Like :func:`coinpilot.candle_files.load_candles`, as columns per symbol (end exclusive)."""
    frame = read_frames(paths, symbols=symbols, end=end, rename=rename)
    if frame is None:
        return {}
    frame = frame.sort(["market", "ts"])
    return {
        str(market): SymbolSeries.from_frame(str(market), part.sort("ts"))
        for (market,), part in frame.group_by(["market"], maintain_order=True)
    }


def series_window(series: dict[str, SymbolSeries], start: datetime | None, warmup: timedelta) -> SeriesWindow:
    """Trade from ``start`` (default: the first candle + ``warmup``), like ``split_window``."""
    if start is None:
        first = min((int(s.ts_ms[0]) for s in series.values() if len(s)), default=0)
        start = datetime.fromtimestamp(first / 1000, UTC) + warmup
    return SeriesWindow(series, start)
