"""Small factories for valid contract instances (tests and benches)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from coinpilot.contracts import MinuteCandle

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def candle(
    minute: int = 0, symbol: str = "KRW-BTC", close: str = "100", volume: str = "1", t0: datetime = T0
) -> MinuteCandle:
    start = t0 + timedelta(minutes=minute)
    price = Decimal(close)
    return MinuteCandle(
        symbol=symbol,
        ts_open=start,
        ts_event=start + timedelta(minutes=1),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(volume),
    )
