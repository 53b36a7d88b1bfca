"""Redis key names and TTLs are those of BEHAVIOUR §10.11 / §5.5; replay runs get their own namespace."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from coinpilot.cache import keys

AT = datetime(2025, 3, 7, 9, 41, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (keys.market_regime("KRW-BTC"), "market:regime:KRW-BTC"),
        (keys.bot_status("KRW-ETH"), "bot:status:KRW-ETH"),
        (keys.position_hwm("KRW-SOL"), "position:KRW-SOL:hwm"),
        (keys.volatility_state("KRW-BTC"), "coinpilot:volatility_state:KRW-BTC"),
        (keys.reference_equity(date(2025, 3, 7)), "coinpilot:reference_equity:2025-03-07"),
        (keys.price("KRW-XRP"), "price:KRW-XRP"),
        (keys.ai_global_block(), "ai:guard:global:block"),
        (keys.ai_symbol_cooldown("KRW-BTC"), "ai:guard:symbol:KRW-BTC:cooldown"),
        (keys.ai_symbol_reject_count("KRW-BTC"), "ai:guard:symbol:KRW-BTC:reject_count"),
        (keys.ai_error_streak(), "ai:guard:error_streak"),
        (keys.ai_usage_hour("2025030709"), "ai:usage:hour:2025030709"),
        (keys.ai_usage_hour(AT), "ai:usage:hour:2025030709"),
        (keys.ai_usage_day("20250307"), "ai:usage:day:20250307"),
        (keys.ai_usage_day(AT), "ai:usage:day:20250307"),
        (keys.ai_usage_day(date(2025, 3, 7)), "ai:usage:day:20250307"),
    ],
)
def test_live_keys_have_the_original_names(key: str, expected: str) -> None:
    assert key == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (keys.market_regime("KRW-BTC", run_id="bt-42"), "run:bt-42:market:regime:KRW-BTC"),
        (keys.ai_error_streak(run_id="bt-42"), "run:bt-42:ai:guard:error_streak"),
        (keys.ai_usage_hour(AT, run_id="bt-42"), "run:bt-42:ai:usage:hour:2025030709"),
        (keys.market_regime("KRW-BTC", run_id="live"), "market:regime:KRW-BTC"),
    ],
)
def test_a_replay_run_prefixes_its_keys_with_its_run_id(key: str, expected: str) -> None:
    assert key == expected


def test_ttl_constants_are_those_of_the_specification() -> None:
    assert keys.MARKET_REGIME_TTL_SECONDS == 7200
    assert keys.BOT_STATUS_TTL_SECONDS == 300
    assert keys.AI_USAGE_HOUR_TTL_SECONDS == 7200
    assert keys.AI_USAGE_DAY_TTL_SECONDS == 172800
    assert keys.AI_ERROR_STREAK_TTL_SECONDS == 3600


@pytest.mark.parametrize(("minutes", "seconds"), [(0, 60), (0.5, 60), (5, 300), (30, 1800), (60, 3600)])
def test_guard_ttls_given_in_minutes_are_at_least_a_minute(minutes: float, seconds: int) -> None:
    assert keys.guard_ttl_seconds(minutes) == seconds


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        (datetime(2025, 3, 7, 0, 0, tzinfo=UTC), 86400),
        (datetime(2025, 3, 7, 12, 0, tzinfo=UTC), 43200),
        (datetime(2025, 3, 7, 23, 30, tzinfo=UTC), 3600),
        (datetime(2025, 3, 7, 22, 0, tzinfo=UTC), 7200),
    ],
)
def test_reference_equity_lives_until_the_next_utc_midnight_but_at_least_an_hour(
    now: datetime, seconds: int
) -> None:
    assert keys.reference_equity_ttl_seconds(now) == seconds
