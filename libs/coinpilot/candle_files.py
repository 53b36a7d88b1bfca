"""Read candle files in the format of ``shared/data`` (gzip CSV ``symbol,ts,open,high,low,close,volume``).

Prices are read as text and turned into ``Decimal`` directly, so no float ever rounds a value:
the files were written with pandas' round-tripping float format, and that text is the truth.
``ts`` is the candle open time in epoch milliseconds; ``BTC/USDT`` becomes the market ``USDT-BTC``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl

from coinpilot.contracts import MinuteCandle
from coinpilot.symbols import is_market, pair_to_market

COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
ONE_MINUTE = timedelta(minutes=1)


def candle_paths(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into their ``*.csv`` / ``*.csv.gz`` files, sorted by name."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted([*path.glob("*.csv.gz"), *path.glob("*.csv")]))
        else:
            out.append(path)
    return out


def market_of(symbol: str) -> str:
    return symbol if is_market(symbol) else pair_to_market(symbol)


def read_frame(path: Path, *, symbol: str | None = None) -> pl.DataFrame:
    """One file as a frame of text columns plus ``ts`` (int ms) and the market code in ``market``."""
    frame = pl.read_csv(
        path, schema_overrides={c: pl.String for c in COLUMNS if c != "ts"} | {"ts": pl.Int64}
    )
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    markets = {s: market_of(s) for s in frame["symbol"].unique().to_list()}
    frame = frame.with_columns(pl.col("symbol").replace_strict(markets).alias("market"))
    if symbol is not None:
        frame = frame.with_columns(pl.lit(symbol).alias("market"))
    return frame.sort("ts")


def frame_to_candles(frame: pl.DataFrame) -> Iterator[MinuteCandle]:
    for market, ts, o, h, lo, c, v in frame.select(
        "market", "ts", "open", "high", "low", "close", "volume"
    ).iter_rows():
        start = datetime.fromtimestamp(ts / 1000, UTC)
        yield MinuteCandle(
            symbol=market,
            ts_open=start,
            ts_event=start + ONE_MINUTE,
            open=Decimal(o),
            high=Decimal(h),
            low=Decimal(lo),
            close=Decimal(c),
            volume=Decimal(v),
        )


def read_frames(
    paths: Sequence[Path],
    *,
    symbols: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    rename: dict[str, str] | None = None,
) -> pl.DataFrame | None:
    """Every file's rows, renamed, filtered and without a repeated (market, ts); None: no file."""
    frames = [read_frame(p) for p in candle_paths(paths)]
    if not frames:
        return None
    frame = pl.concat(frames)
    if rename:
        frame = frame.with_columns(pl.col("market").replace(rename))
    if symbols:
        frame = frame.filter(pl.col("market").is_in(list(symbols)))
    if start is not None:
        frame = frame.filter(pl.col("ts") >= int(start.timestamp() * 1000))
    if end is not None:
        frame = frame.filter(pl.col("ts") < int(end.timestamp() * 1000))
    return frame.unique(subset=["market", "ts"], keep="first", maintain_order=True)


def load_candles(
    paths: Sequence[Path],
    *,
    symbols: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    rename: dict[str, str] | None = None,
) -> list[MinuteCandle]:
    """Candles of every file, merged in (time, symbol) order, optionally filtered and renamed.

    ``rename`` maps a file market to the market to publish it as (e.g. ``USDT-BTC`` -> ``KRW-BTC``
    for a KRW demo on USDT data); ``start``/``end`` bound the candle open time, end exclusive.
    """
    frame = read_frames(paths, symbols=symbols, start=start, end=end, rename=rename)
    if frame is None:
        return []
    frame = frame.sort(["ts", "market"])
    return list(frame_to_candles(frame))
