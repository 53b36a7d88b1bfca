"""Builders for agent tests: hourly bars, proposed orders and a context book around them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from coinpilot.clock import iso_minute
from coinpilot.contracts import (
    EntrySignal,
    HourlyCandle,
    IndicatorSnapshot,
    MinuteCandle,
    OrderProposed,
    Regime,
)
from services.agent.context import Bar
from services.agent.core import AgentParams, ContextBook

T0 = datetime(2026, 2, 18, tzinfo=UTC)
HOUR = timedelta(hours=1)


def bar(
    hour: int,
    close: float,
    *,
    open_: float | None = None,
    high: float | None = None,
    low: float | None = None,
    volume: float = 10.0,
    t0: datetime = T0,
) -> Bar:
    o = close if open_ is None else open_
    return Bar(
        ts_open=t0 + hour * HOUR,
        open=o,
        high=max(o, close) + 1 if high is None else high,
        low=min(o, close) - 1 if low is None else low,
        close=close,
        volume=volume,
    )


def bars_from_closes(
    closes: Sequence[float], volumes: Sequence[float] | None = None, t0: datetime = T0
) -> tuple[Bar, ...]:
    vols = volumes or [10.0] * len(closes)
    return tuple(bar(i, c, volume=v, t0=t0) for i, (c, v) in enumerate(zip(closes, vols, strict=True)))


def gentle_uptrend(n: int = 24, t0: datetime = T0, start: float = 100.0) -> tuple[Bar, ...]:
    """Alternating small candles drifting up: nothing a reviewer would call abnormal."""
    out = []
    price = start
    for i in range(n):
        step = 0.3 if i % 3 else -0.1
        out.append(bar(i, price + step, open_=price, t0=t0))
        price += step
    return tuple(out)


def hourly_candle(b: Bar, symbol: str = "KRW-BTC") -> HourlyCandle:
    return HourlyCandle(
        symbol=symbol,
        ts_open=b.ts_open,
        ts_event=b.ts_open + HOUR,
        open=Decimal(str(b.open)),
        high=Decimal(str(b.high)),
        low=Decimal(str(b.low)),
        close=Decimal(str(b.close)),
        volume=Decimal(str(b.volume)),
        minute_count=60,
    )


def order(
    at: datetime,
    *,
    symbol: str = "KRW-BTC",
    regime: Regime = Regime.SIDEWAYS,
    price: str = "100000",
    amount: str = "1800000",
    rsi: float | None = 40.0,
    diff_pct: float | None = 1.2,
) -> OrderProposed:
    """A proposed BUY whose signal candle closes at ``at``."""
    minute_open = at - timedelta(minutes=1)
    p = Decimal(price)
    candle = MinuteCandle(
        symbol=symbol, ts_open=minute_open, ts_event=at, open=p, high=p, low=p, close=p, volume=Decimal("2")
    )
    snapshot = IndicatorSnapshot(
        ts_event=at,
        symbol=symbol,
        candle=candle,
        regime=regime,
        regime_diff_pct=diff_pct,
        rsi_14=rsi,
        rsi_7=43.0,
        rsi_7_prev=41.0,
        rsi_7_min_lookback=39.0,
        ma_20=99000.0,
        bb_mid=100500.0,
        bb_upper=102000.0,
        bb_lower=99000.0,
        vol_ratio=1.5,
        recent_vol_ratios=(0.9, 1.1, 1.5),
        bars_seen=200,
    )
    signal = EntrySignal(ts_event=at, symbol=symbol, price=p, regime=regime, snapshot=snapshot)
    return OrderProposed(
        ts_event=at,
        order_id=f"{symbol}:{iso_minute(at)}:buy",
        symbol=symbol,
        reference_price=p,
        amount=Decimal(amount),
        regime=regime,
        vol_multiplier=Decimal("1.0"),
        signal=signal,
    )


def book_of(bars: Sequence[Bar], symbol: str = "KRW-BTC") -> ContextBook:
    book = ContextBook()
    for b in bars:
        book = book.with_bar(symbol, b)
    return book


PARAMS = AgentParams()
