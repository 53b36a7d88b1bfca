"""The backtest leaves out exactly the candles the services quarantine (coinpilot.market_checks)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from apps.backtest.run import Window, run_backtest, split_window
from apps.backtest.series import load_series
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle
from coinpilot.errors import RefusedMessage
from coinpilot.market_checks import CandleGate, CandleRule, CandleSettings, parse_candle

BTC_FILE = "BTC_USDT-1m-20230316-20230501.csv.gz"


def forged_file(shared_data: Path, tmp_path: Path) -> Path:
    """600 real BTC minutes with a defect of every kind a file can hold, and a real-looking crash."""
    frame = pl.read_csv(
        shared_data / BTC_FILE, n_rows=600, schema_overrides={"ts": pl.Int64}, infer_schema=False
    )
    rows = frame.rows(named=True)
    rows[100] |= {"open": "0"}
    rows[200] |= {"high": str(float(rows[200]["low"]) - 1)}
    rows[300] |= {"volume": "-1"}
    rows[400] |= {"low": "1", "close": "1"}  # one forged minute: refused, the next real one carries on
    for row in rows[500:]:  # a crash that lasts: its first minute refused, the second confirms it
        for column in ("open", "high", "low", "close"):
            row[column] = str(Decimal(row[column]) / 2)
    rows[500]["open"] = rows[499]["close"]
    rows[500]["high"] = max(rows[500]["high"], rows[499]["close"], key=Decimal)
    path = tmp_path / "BTC_USDT-1m-forged.csv.gz"
    with gzip.open(path, "wb") as out:
        pl.DataFrame(rows).select(frame.columns).write_csv(out)
    return path


def as_the_services_see_it(path: Path) -> list[tuple[int, CandleRule]]:
    """Each row as a message on ``candles.1m.USDT-BTC`` through a service's gate (a replay run)."""
    frame = pl.read_csv(path, schema_overrides={"ts": pl.Int64}, infer_schema=False)
    gate = CandleGate(CandleSettings().limits(), "live")
    refused = []
    for row in frame.iter_rows(named=True):
        start = datetime.fromtimestamp(row["ts"] / 1000, UTC)
        body = {k: row[k] for k in ("open", "high", "low", "close", "volume")} | {
            "symbol": "USDT-BTC",
            "ts_open": start.isoformat(),
            "ts_event": (start + timedelta(minutes=1)).isoformat(),
        }
        candle = parse_candle("candles.1m.USDT-BTC", json.dumps(body).encode())
        try:
            gate.commit(gate.admit([("candles.1m.USDT-BTC", candle, "replay-1")], None))
        except RefusedMessage as exc:
            refused.append((row["ts"], CandleRule(exc.rule)))
    return refused


def test_a_file_loses_exactly_the_candles_a_service_refuses(shared_data: Path, tmp_path: Path) -> None:
    path = forged_file(shared_data, tmp_path)
    series = load_series([path])["USDT-BTC"]
    ts = pl.read_csv(path, schema_overrides={"ts": pl.Int64}, infer_schema=False)["ts"].to_list()
    expected = [
        (ts[100], CandleRule.POSITIVE_PRICE),
        (ts[200], CandleRule.OHLC),
        (ts[300], CandleRule.VOLUME),
        (ts[400], CandleRule.MOVE_BREAKER),
        (ts[500], CandleRule.MOVE_BREAKER),
    ]
    assert sorted(series.quarantined) == expected
    assert as_the_services_see_it(path) == expected
    assert len(series) == 595 and set(series.ts_ms.tolist()) == set(ts) - {t for t, _ in expected}
    kept = series.ts_ms.tolist().index(ts[501])
    assert series.price("close", kept) == Decimal(pl.read_csv(path, infer_schema=False)["close"][501])


@pytest.fixture(scope="module")
def sample() -> list[MinuteCandle]:
    return load_candles(sample_files())


async def test_forged_candles_change_nothing_the_backtest_books(sample: list[MinuteCandle]) -> None:
    """Two minutes of a held BTC position taken out of the sample, then put back forged (a close
    of 1, which would fire a STOP_LOSS at 1, and zero prices), plus a candle dated a year ahead:
    the run books what the run without them books."""
    window = split_window(sample, None, None)
    first, _ = await run_backtest(window)
    buy = next(f for f in first.fills if f.symbol == "USDT-BTC" and f.side == "BUY")
    sell = next(f for f in first.fills if f.symbol == "USDT-BTC" and f.ts_event > buy.ts_event)
    held = buy.ts_event + timedelta(minutes=5)
    assert held + timedelta(minutes=2) < sell.ts_event
    taken = {
        (c.symbol, c.ts_open): c
        for c in window.trade
        if c.symbol == "USDT-BTC" and held <= c.ts_open < held + timedelta(minutes=2)
    }
    assert len(taken) == 2
    clean = Window(window.warmup, [c for c in window.trade if (c.symbol, c.ts_open) not in taken])
    one, zero = sorted(taken.values(), key=lambda c: c.ts_open)
    forged = [
        one.model_copy(update={"low": Decimal(1), "close": Decimal(1)}),
        zero.model_copy(update={k: Decimal(0) for k in ("open", "high", "low", "close")}),
        one.model_copy(
            update={"ts_open": one.ts_open.replace(year=2024), "ts_event": one.ts_event.replace(year=2024)}
        ),
    ]
    dirty = Window(clean.warmup, sorted([*clean.trade, *forged], key=lambda c: (c.ts_open, c.symbol)))
    base, _ = await run_backtest(clean)
    tried, _ = await run_backtest(dirty)
    assert base.fills and [f.to_json() for f in tried.fills] == [f.to_json() for f in base.fills]
    assert [(p.ts, p.equity) for p in tried.equity] == [(p.ts, p.equity) for p in base.equity]
