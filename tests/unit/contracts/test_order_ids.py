"""The one order id every stage builds, and its inverse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from coinpilot.contracts import Side, order_id_for, order_time


def test_an_order_id_names_symbol_event_minute_and_side() -> None:
    at = datetime(2026, 3, 2, 12, 0, 41, 500_000, tzinfo=UTC)
    assert order_id_for("KRW-BTC", at, Side.BUY) == "KRW-BTC:2026-03-02T12:00Z:buy"
    assert order_id_for("KRW-BTC", at, Side.SELL) == "KRW-BTC:2026-03-02T12:00Z:sell"


def test_an_event_time_in_another_zone_names_the_same_utc_minute() -> None:
    kst = timezone(timedelta(hours=9))
    at = datetime(2026, 3, 2, 21, 0, tzinfo=kst)
    assert order_id_for("KRW-ETH", at, Side.BUY) == "KRW-ETH:2026-03-02T12:00Z:buy"


def test_order_time_inverts_the_id_to_an_aware_utc_minute() -> None:
    at = datetime(2026, 3, 2, 12, 7, 59, tzinfo=UTC)
    parsed = order_time(order_id_for("USDT-BTC", at, Side.SELL))
    assert parsed == datetime(2026, 3, 2, 12, 7, tzinfo=UTC)
    assert parsed.tzinfo == UTC
