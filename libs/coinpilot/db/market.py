"""``market_data`` reads and writes: the bulk COPY import, the single-candle upsert, window loads.

Every statement here runs unchanged on plain PostgreSQL and on a TimescaleDB hypertable: hourly
buckets use ``date_bin`` (PostgreSQL 14+), never ``time_bucket``. Writes are idempotent on
``(symbol, interval, timestamp)``. The bulk import (``copy_candles``: files and the collector's own
Upbit backfill) writes nothing on a re-import and updates a candle whose values changed (the
exchange corrected it), returning the rows inserted or changed. Candles from the bus
(``insert_candles``: the recorder) never change a stored minute: other values for it are a
conflict the caller refuses (issue 19).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import func, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.clock import ensure_utc
from coinpilot.contracts import HourlyCandle, MinuteCandle
from coinpilot.db.database import Database
from coinpilot.db.models import MarketData

ONE_MINUTE = timedelta(minutes=1)
ONE_HOUR = timedelta(hours=1)
VALUE_COLUMNS = ("open_price", "high_price", "low_price", "close_price", "volume")
COPY_COLUMNS = ("symbol", "interval", "timestamp", *VALUE_COLUMNS)
_EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


class CandleRow(NamedTuple):
    """One ``market_data`` row, as the bulk path takes it (no contract validation per row)."""

    symbol: str
    interval: str
    timestamp: datetime
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    close_price: Decimal
    volume: Decimal


def candle_row(candle: MinuteCandle | HourlyCandle | CandleRow) -> CandleRow:
    if isinstance(candle, CandleRow):
        return candle._replace(timestamp=ensure_utc(candle.timestamp))
    interval = "1h" if isinstance(candle, HourlyCandle) else "1m"
    return CandleRow(
        candle.symbol,
        interval,
        candle.ts_open,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
    )


_STAGE = f"""
CREATE TEMP TABLE market_data_import (
    seq bigserial,
    symbol varchar(20) NOT NULL,
    interval varchar(10) NOT NULL,
    timestamp timestamptz NOT NULL,
    {", ".join(f"{c} numeric NOT NULL" for c in VALUE_COLUMNS)}
) ON COMMIT DROP
"""

# The last row of a batch wins when a candle appears twice (ON CONFLICT cannot touch a row twice).
_MERGE = f"""
INSERT INTO market_data ({", ".join(COPY_COLUMNS)})
SELECT DISTINCT ON (symbol, interval, timestamp) {", ".join(COPY_COLUMNS)}
FROM market_data_import
ORDER BY symbol, interval, timestamp, seq DESC
ON CONFLICT (symbol, interval, timestamp) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in VALUE_COLUMNS)}
WHERE ({", ".join(f"market_data.{c}" for c in VALUE_COLUMNS)})
    IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in VALUE_COLUMNS)})
"""


# A run of candles from the bus, in one round trip: new minutes are inserted (the first of a
# repeated one wins), a stored minute is never changed. The second branch reports every candle
# whose minute was already stored with other values (the outer SELECT sees the table as it was
# before the INSERT), the third one a minute repeated in the run with other values; on the normal
# path both are index lookups that find nothing. Values compare at the column's precision.
_BATCH = f"""
unnest($1::varchar[], $2::varchar[], $3::timestamptz[],
       $4::numeric[], $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[])
     WITH ORDINALITY AS b({", ".join(COPY_COLUMNS)}, seq)"""
_CAST = ", ".join(f"{{t}}.{c}::numeric(28, 8)" for c in VALUE_COLUMNS)
_KEY = "{a}.symbol = {b}.symbol AND {a}.interval = {b}.interval AND {a}.timestamp = {b}.timestamp"
_INSERT_NEW = f"""
WITH batch AS (SELECT * FROM {_BATCH}),
inserted AS (
    INSERT INTO market_data ({", ".join(COPY_COLUMNS)})
    SELECT DISTINCT ON (symbol, interval, timestamp) {", ".join(COPY_COLUMNS)}
    FROM batch
    ORDER BY symbol, interval, timestamp, seq
    ON CONFLICT (symbol, interval, timestamp) DO NOTHING
    RETURNING 1
)
SELECT 0::bigint AS seq, (SELECT count(*) FROM inserted)::numeric,
       NULL::numeric, NULL::numeric, NULL::numeric, NULL::numeric
UNION ALL
SELECT b.seq, {", ".join(f"m.{c}" for c in VALUE_COLUMNS)}
FROM batch b JOIN market_data m ON {_KEY.format(a="m", b="b")}
WHERE ({", ".join(f"m.{c}" for c in VALUE_COLUMNS)}) IS DISTINCT FROM ({_CAST.format(t="b")})
UNION ALL
SELECT b.seq, {_CAST.format(t="first")}
FROM batch b JOIN batch first ON {_KEY.format(a="first", b="b")} AND first.seq < b.seq
WHERE ({_CAST.format(t="first")}) IS DISTINCT FROM ({_CAST.format(t="b")})
"""


class Recorded(NamedTuple):
    """What :func:`insert_candles` did: rows inserted, and the candles that conflict (their
    index in the run, and the values the minute already has)."""

    written: int
    conflicts: dict[int, CandleRow]


class _Conflicts(Exception):
    """Rolls the run back: nothing of a run with a conflicting candle is kept."""


async def insert_candles(
    db: Database, candles: Sequence[MinuteCandle | HourlyCandle | CandleRow]
) -> Recorded:
    """Insert a run of candles in one statement, never changing a stored minute (issue 19).

    A candle whose minute is stored (or came earlier in the run) with the same values is a no-op
    (a redelivery, a replay of the same data). One with other values is a conflict: the whole run
    is rolled back and the conflicts are returned with the values that stand, for the caller to
    refuse them (and record the others again).
    """
    if not candles:
        return Recorded(0, {})
    rows = [candle_row(c) for c in candles]
    columns = list(zip(*rows, strict=True))
    try:
        async with db.engine.begin() as conn:
            result = await conn.exec_driver_sql(_INSERT_NEW, tuple(list(c) for c in columns))
            written = 0
            conflicts: dict[int, CandleRow] = {}
            for seq, *values in result.all():
                if seq == 0:
                    written = int(values[0])
                    continue
                row = rows[seq - 1]
                conflicts.setdefault(seq - 1, CandleRow(row.symbol, row.interval, row.timestamp, *values))
            if conflicts:
                raise _Conflicts(conflicts)
    except _Conflicts as rollback:
        return Recorded(0, rollback.args[0])
    return Recorded(written, {})


async def copy_candles(db: Database, rows: Iterable[MinuteCandle | HourlyCandle | CandleRow]) -> int:
    """Bulk import: COPY into a temp table, then merge into ``market_data`` in one transaction.

    Returns the rows written (inserted, or updated because a value differed); 0 for a re-import.
    """
    records = [candle_row(row) for row in rows]
    if not records:
        return 0
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(_STAGE)
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            "market_data_import", records=records, columns=COPY_COLUMNS
        )
        result = await conn.exec_driver_sql(_MERGE)
        return int(result.rowcount)


async def upsert_candle(session: AsyncSession, candle: MinuteCandle | HourlyCandle | CandleRow) -> bool:
    """Insert one candle, or correct the stored one if its values differ; True when a row was written."""
    row = candle_row(candle)._asdict()
    statement = insert(MarketData).values(**row)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        constraint="uq_market_data_symbol_interval_ts",
        set_={c: excluded[c] for c in VALUE_COLUMNS},
        where=tuple_(*(MarketData.__table__.c[c] for c in VALUE_COLUMNS)).is_distinct_from(
            tuple_(*(excluded[c] for c in VALUE_COLUMNS))
        ),
    ).returning(MarketData.id)
    result = await session.execute(statement)
    return result.scalar_one_or_none() is not None


async def last_candle_time(session: AsyncSession, symbol: str, interval: str = "1m") -> datetime | None:
    """Open time of the newest stored candle of ``symbol``/``interval``; None when there is none."""
    statement = select(func.max(MarketData.timestamp)).where(
        MarketData.symbol == symbol, MarketData.interval == interval
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def load_rows(
    session: AsyncSession, symbol: str, start: datetime, end: datetime, interval: str = "1m"
) -> list[CandleRow]:
    """Rows of one symbol and interval with ``start <= timestamp < end``, oldest first."""
    statement = (
        select(*(MarketData.__table__.c[c] for c in CandleRow._fields))
        .where(
            MarketData.symbol == symbol,
            MarketData.interval == interval,
            MarketData.timestamp >= start,
            MarketData.timestamp < end,
        )
        .order_by(MarketData.timestamp)
    )
    return [CandleRow(*row) for row in (await session.execute(statement)).all()]


async def load_candles(
    session: AsyncSession, symbol: str, start: datetime, end: datetime, interval: str = "1m"
) -> list[MinuteCandle]:
    """Closed 1m candles opened in ``[start, end)``, oldest first.

    Only rows of ``interval`` are read (the original mixed any stored interval in, §2.1); the
    contract is a minute candle, so ``interval`` must be ``"1m"``.
    """
    if interval != "1m":
        raise ValueError(f"load_candles builds MinuteCandle: interval must be '1m', got {interval!r}")
    return [minute_candle(row) for row in await load_rows(session, symbol, start, end, interval)]


async def latest_candles(session: AsyncSession, symbol: str, limit: int = 200) -> list[MinuteCandle]:
    """The newest ``limit`` 1m candles of ``symbol``, oldest first (the §2.1 window, interval filtered)."""
    newest = (
        select(*(MarketData.__table__.c[c] for c in CandleRow._fields))
        .where(MarketData.symbol == symbol, MarketData.interval == "1m")
        .order_by(MarketData.timestamp.desc())
        .limit(limit)
    )
    rows = [CandleRow(*row) for row in (await session.execute(newest)).all()]
    return [minute_candle(row) for row in reversed(rows)]


async def load_hourly_candles(
    session: AsyncSession, symbol: str, start: datetime, end: datetime
) -> list[HourlyCandle]:
    """Hourly candles built in SQL from the 1m rows opened in ``[start, end)`` (BEHAVIOUR §2.5).

    Buckets are ``date_bin('1 hour', ...)`` (works with or without TimescaleDB); open is the first
    minute's open, close the last minute's close, ``minute_count`` how many minutes the hour had.
    Every hour with at least one minute is returned, complete or not: callers decide what to keep.
    """
    m = MarketData.__table__.c
    bucket = func.date_bin(literal_column("INTERVAL '1 hour'"), m.timestamp, literal_column(_EPOCH))
    statement = (
        select(
            bucket.label("hour"),
            func.array_agg(aggregate_order_by(m.open_price, m.timestamp.asc()))[1].label("open"),
            func.max(m.high_price),
            func.min(m.low_price),
            func.array_agg(aggregate_order_by(m.close_price, m.timestamp.desc()))[1].label("close"),
            func.sum(m.volume),
            func.count(),
        )
        .where(m.symbol == symbol, m.interval == "1m", m.timestamp >= start, m.timestamp < end)
        .group_by(bucket)
        .order_by(bucket)
    )
    return [
        HourlyCandle(
            symbol=symbol,
            ts_open=hour,
            ts_event=hour + ONE_HOUR,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=volume,
            minute_count=count,
        )
        for hour, open_, high, low, close, volume, count in (await session.execute(statement)).all()
    ]


def minute_candle(row: CandleRow) -> MinuteCandle:
    start = ensure_utc(row.timestamp)
    return MinuteCandle(
        symbol=row.symbol,
        ts_open=start,
        ts_event=start + ONE_MINUTE,
        open=row.open_price,
        high=row.high_price,
        low=row.low_price,
        close=row.close_price,
        volume=row.volume,
    )


__all__: Sequence[str] = (
    "CandleRow",
    "candle_row",
    "copy_candles",
    "insert_candles",
    "last_candle_time",
    "latest_candles",
    "load_candles",
    "load_hourly_candles",
    "load_rows",
    "minute_candle",
    "upsert_candle",
)
