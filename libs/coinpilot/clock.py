"""Event-time helpers: every boundary a core needs, computed from a timestamp it is given.

No function here reads the wall clock. Cores receive "now" as the ``ts_event`` of the message they
handle; the only wall-clock seam is :func:`wall_clock_now`, used by edges (publish time, metrics).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

KST = timezone(timedelta(hours=9), name="KST")
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def ensure_utc(ts: datetime) -> datetime:
    """Return ``ts`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def floor_minute(ts: datetime) -> datetime:
    ts = ensure_utc(ts)
    return ts.replace(second=0, microsecond=0)


def floor_hour(ts: datetime) -> datetime:
    ts = ensure_utc(ts)
    return ts.replace(minute=0, second=0, microsecond=0)


def utc_day_start(ts: datetime) -> datetime:
    ts = ensure_utc(ts)
    return datetime.combine(ts.date(), time(0), tzinfo=UTC)


def kst_day_start(ts: datetime) -> datetime:
    """Start of the KST calendar day containing ``ts``, returned in UTC (15:00 UTC the day before)."""
    local = ensure_utc(ts).astimezone(KST)
    return datetime.combine(local.date(), time(0), tzinfo=KST).astimezone(UTC)


def trading_day(ts: datetime, boundary: time = time(0)) -> date:
    """The trading day ``ts`` belongs to, when days start at ``boundary`` (UTC).

    With the default boundary 00:00 UTC (09:00 KST) this is the UTC date, as in the original.
    """
    shifted = ensure_utc(ts) - timedelta(hours=boundary.hour, minutes=boundary.minute)
    return shifted.date()


def trading_day_start(day: date, boundary: time = time(0)) -> datetime:
    return datetime.combine(day, boundary, tzinfo=UTC)


def next_daily_boundary(ts: datetime, at: time) -> datetime:
    """The first instant ``>= ts`` that is ``at`` (UTC) on some day."""
    ts = ensure_utc(ts)
    candidate = datetime.combine(ts.date(), at, tzinfo=UTC)
    return candidate if candidate >= ts else candidate + DAY


def last_daily_boundary(ts: datetime, at: time) -> datetime:
    """The last instant ``<= ts`` that is ``at`` (UTC) on some day."""
    ts = ensure_utc(ts)
    candidate = datetime.combine(ts.date(), at, tzinfo=UTC)
    return candidate if candidate <= ts else candidate - DAY


def crossed_daily_boundary(previous: datetime | None, now: datetime, at: time) -> datetime | None:
    """The boundary ``at`` passed by moving event time from ``previous`` to ``now``, if any.

    This is how schedules fire on event time: "once when the event time passes the boundary,
    never twice" (BEHAVIOUR §12). With no previous time, nothing has been crossed yet.
    """
    if previous is None:
        return None
    boundary = last_daily_boundary(now, at)
    return boundary if ensure_utc(previous) < boundary else None


def seconds_until_next_utc_midnight(ts: datetime) -> int:
    ts = ensure_utc(ts)
    nxt = utc_day_start(ts) + DAY
    return int((nxt - ts).total_seconds())


def wall_clock_now() -> datetime:
    """The one wall-clock read in the system; edges only (publish time, latency, polling)."""
    return datetime.now(UTC)


def iso_minute(ts: datetime) -> str:
    """Compact, stable UTC minute label used in deterministic ids: ``2026-01-01T00:00Z``."""
    return ensure_utc(ts).strftime("%Y-%m-%dT%H:%MZ")
