"""Every Redis key CoinPilot uses (BEHAVIOUR §10.11 and §5.5), with its TTL.

Keys of a replay run live under ``run:<run_id>:`` so a replay never reads or overwrites live keys;
``run_id="live"`` (the default) gives the original, unprefixed names the dashboard reads.
Redis only holds what can be rebuilt; see README.md for who writes and reads each key and what
happens when Redis is down.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from coinpilot.clock import ensure_utc

LIVE = "live"

MARKET_REGIME_TTL_SECONDS = 7200
BOT_STATUS_TTL_SECONDS = 300
REFERENCE_EQUITY_MIN_TTL_SECONDS = 3600
AI_ERROR_STREAK_TTL_SECONDS = 3600
AI_USAGE_HOUR_TTL_SECONDS = 7200
AI_USAGE_DAY_TTL_SECONDS = 172800
AI_GUARD_ORDER_TTL_SECONDS = 172800
MIN_GUARD_TTL_SECONDS = 60
"""Floor of every ``ai:guard:*`` TTL given in minutes (§5.5: ``max(60, minutes x 60)``)."""


def namespace(run_id: str = LIVE) -> str:
    """The key prefix of a run: empty for live, ``run:<run_id>:`` for a replay."""
    return "" if run_id == LIVE else f"run:{run_id}:"


def market_regime(symbol: str, run_id: str = LIVE) -> str:
    """Current regime (BULL/SIDEWAYS/BEAR/UNKNOWN), TTL :data:`MARKET_REGIME_TTL_SECONDS`."""
    return f"{namespace(run_id)}market:regime:{symbol}"


def bot_status(symbol: str, run_id: str = LIVE) -> str:
    """Dashboard status JSON (§6.6), TTL :data:`BOT_STATUS_TTL_SECONDS`."""
    return f"{namespace(run_id)}bot:status:{symbol}"


def position_hwm(symbol: str, run_id: str = LIVE) -> str:
    """High-water mark of the open position (decimal string), no TTL."""
    return f"{namespace(run_id)}position:{symbol}:hwm"


def volatility_state(symbol: str, run_id: str = LIVE) -> str:
    """Volatility JSON per symbol (§4.9 Rebuild): current_volatility, is_high_volatility, timestamp,
    symbol, as_of. No TTL: staleness is judged from ``as_of``."""
    return f"{namespace(run_id)}coinpilot:volatility_state:{symbol}"


def reference_equity(day: date, run_id: str = LIVE) -> str:
    """Reference equity of a trading day (decimal string), TTL :func:`reference_equity_ttl_seconds`."""
    return f"{namespace(run_id)}coinpilot:reference_equity:{day.isoformat()}"


def price(symbol: str, run_id: str = LIVE) -> str:
    """Last price (decimal string)."""
    return f"{namespace(run_id)}price:{symbol}"


def ai_global_block(run_id: str = LIVE) -> str:
    """``"<low_credit|error_streak>|<until ISO>"``: active while ``until`` (event time) is after the
    order's ``ts_event``; the Redis TTL only collects garbage (``services/agent/guard_redis_codec.py``)."""
    return f"{namespace(run_id)}ai:guard:global:block"


def ai_symbol_cooldown(symbol: str, run_id: str = LIVE) -> str:
    """``"<minutes>|<until ISO>"`` (the 5/10/15 ladder, in event time); TTL collects garbage only."""
    return f"{namespace(run_id)}ai:guard:symbol:{symbol}:cooldown"


def ai_symbol_reject_count(symbol: str, run_id: str = LIVE) -> str:
    """``"<count>|<until ISO>"``, ``until`` refreshed on every reject (sliding window, event time)."""
    return f"{namespace(run_id)}ai:guard:symbol:{symbol}:reject_count"


def ai_error_streak(run_id: str = LIVE) -> str:
    """``"<count>|<until ISO>"``; ``until`` = last error + :data:`AI_ERROR_STREAK_TTL_SECONDS`, event time."""
    return f"{namespace(run_id)}ai:guard:error_streak"


def ai_guard_order(order_id: str, run_id: str = LIVE) -> str:
    """How far one order got through the guardrails: ``admitted`` (its call was counted) or
    ``settled`` (its post-decision update was applied), so a redelivery, on any replica, counts
    and updates once. TTL :data:`AI_GUARD_ORDER_TTL_SECONDS`."""
    return f"{namespace(run_id)}ai:guard:order:{order_id}"


def ai_usage_hour(hour: str | datetime, run_id: str = LIVE) -> str:
    """AI calls in a UTC hour (``YYYYMMDDHH`` or a datetime), TTL :data:`AI_USAGE_HOUR_TTL_SECONDS`."""
    bucket = hour if isinstance(hour, str) else f"{ensure_utc(hour):%Y%m%d%H}"
    return f"{namespace(run_id)}ai:usage:hour:{bucket}"


def ai_usage_day(day: str | date, run_id: str = LIVE) -> str:
    """AI calls in a UTC day (``YYYYMMDD``, a date or a datetime), TTL :data:`AI_USAGE_DAY_TTL_SECONDS`."""
    if isinstance(day, datetime):
        day = ensure_utc(day).date()
    bucket = day if isinstance(day, str) else f"{day:%Y%m%d}"
    return f"{namespace(run_id)}ai:usage:day:{bucket}"


def guard_ttl_seconds(minutes: float) -> int:
    """TTL of a guardrail key configured in minutes: ``max(60, minutes x 60)`` (§5.5)."""
    return max(MIN_GUARD_TTL_SECONDS, int(minutes * 60))


def reference_equity_ttl_seconds(now: datetime) -> int:
    """Seconds until the next UTC midnight after ``now``, at least one hour (§10.11)."""
    now = ensure_utc(now)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(REFERENCE_EQUITY_MIN_TTL_SECONDS, int((midnight - now).total_seconds()))
