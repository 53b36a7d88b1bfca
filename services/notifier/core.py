"""The notifier's pure core: which sink gets what for an event, how to retry, when the report is due.

    plan(event, event_key, params)                -> tuple[Notification, ...]
    classify(status_code)                         -> AttemptStatus
    retry_delay(policy, attempt, retry_after)     -> seconds to wait before the next attempt
    first_report_boundary(first_seen, schedule)   -> the first 22:00 KST boundary a run reports
    reports_due(now, next_boundary, schedule)     -> every boundary event time has passed, in order

No I/O: the delivery loop (``delivery.py``) and the handlers (``app.py``) do the sending.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from coinpilot.clock import DAY, KST, ensure_utc, last_daily_boundary, next_daily_boundary
from coinpilot.contracts import AiDecision, AiVerdict, DailyReport, Fill, RiskAlert
from services.notifier import payloads
from services.notifier.payloads import Json

Event = Fill | AiDecision | RiskAlert | DailyReport


class Sink(StrEnum):
    DISCORD = "discord"
    N8N = "n8n"


class EventType(StrEnum):
    TRADE = "trade"
    AI_DECISION = "ai_decision"
    RISK_ALERT = "risk_alert"
    DAILY_REPORT = "daily_report"


#: n8n webhook path of each event type (BEHAVIOUR §7.2): POST <base>/webhook/<path>
N8N_PATHS: Mapping[EventType, str] = {
    EventType.TRADE: "trade",
    EventType.AI_DECISION: "ai-decision",
    EventType.RISK_ALERT: "risk",
    EventType.DAILY_REPORT: "daily-report",
}


class AttemptStatus(StrEnum):
    """How one HTTP attempt ended (a ``notification_deliveries`` row's ``status``)."""

    SENT = "sent"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"  # 5xx, 408, timeout, connection error: worth another try
    REJECTED = "rejected"  # other 4xx (bad secret, bad embed, deleted webhook): a retry repeats it


@dataclass(frozen=True, slots=True)
class NotifierParams:
    sinks: frozenset[Sink] = frozenset()
    ai_decisions: frozenset[AiVerdict] = frozenset({AiVerdict.REJECT})


@dataclass(frozen=True, slots=True)
class Notification:
    """One request to make: ``path`` is the n8n webhook path ("" for Discord)."""

    sink: Sink
    event_type: EventType
    event_key: str
    path: str
    body: Json = field(compare=False)

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


def event_type_of(event: Event) -> EventType:
    if isinstance(event, Fill):
        return EventType.TRADE
    if isinstance(event, AiDecision):
        return EventType.AI_DECISION
    if isinstance(event, RiskAlert):
        return EventType.RISK_ALERT
    return EventType.DAILY_REPORT


def event_key(event: Event, run_id: str) -> str:
    """Stable per event and run: a redelivery has the same key, so it is posted once per sink."""
    return f"{run_id}:{event.msg_id()}"


def wanted(event: Event, params: NotifierParams) -> bool:
    return not isinstance(event, AiDecision) or event.decision in params.ai_decisions


def n8n_payload(event: Event) -> Json:
    if isinstance(event, Fill):
        return payloads.trade_payload(event)
    if isinstance(event, AiDecision):
        return payloads.ai_decision_payload(event)
    if isinstance(event, RiskAlert):
        return payloads.risk_payload(event)
    return payloads.daily_report_payload(event)


def discord_embed(event: Event) -> Json:
    if isinstance(event, Fill):
        return payloads.trade_embed(event)
    if isinstance(event, AiDecision):
        return payloads.ai_decision_embed(event)
    if isinstance(event, RiskAlert):
        return payloads.risk_embed(event)
    return payloads.daily_report_embed(event)


def plan(event: Event, key: str, params: NotifierParams) -> tuple[Notification, ...]:
    """Every request this event calls for, one per configured sink (none if it is filtered out)."""
    if not wanted(event, params):
        return ()
    kind = event_type_of(event)
    out: list[Notification] = []
    if Sink.DISCORD in params.sinks:
        out.append(Notification(Sink.DISCORD, kind, key, "", payloads.discord_message(discord_embed(event))))
    if Sink.N8N in params.sinks:
        out.append(Notification(Sink.N8N, kind, key, N8N_PATHS[kind], n8n_payload(event)))
    return tuple(out)


# -- retries --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """3 attempts, 1 s then 2 s between them, 5 s per request (§7.1); 429 waits what it is told."""

    max_attempts: int = 3
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 30.0
    request_timeout_seconds: float = 5.0
    max_retry_after_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")


def classify(status_code: int | None) -> AttemptStatus:
    """``None`` is a transport failure (timeout, refused connection). Any 2xx is success (§7.1 fix)."""
    if status_code is None or status_code >= 500 or status_code == 408:
        return AttemptStatus.FAILED
    if 200 <= status_code < 300:
        return AttemptStatus.SENT
    if status_code == 429:
        return AttemptStatus.RATE_LIMITED
    return AttemptStatus.REJECTED


def metric_status(status: AttemptStatus) -> str:
    """The deliveries metric keeps two attempt outcomes, ``sent`` and ``failed`` (any non-2xx)."""
    return "sent" if status is AttemptStatus.SENT else "failed"


def retry_after_seconds(headers: Mapping[str, str], body: bytes) -> float | None:
    """Discord's hint: JSON ``retry_after`` (seconds, float) first, then the ``Retry-After`` header."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        value = data.get("retry_after")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def retry_delay(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
    """Wait before attempt ``attempt + 1``: the server's hint when given, else base × 2^(attempt−1)."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after_seconds)
    return min(policy.backoff_cap_seconds, policy.backoff_base_seconds * 2 ** (attempt - 1))


# -- daily report schedule ------------------------------------------------------------------------
REPORT_TIME_UTC = time(13, 0)  # 22:00 KST
REPORT_TIME_KST = time(22, 0)


@dataclass(frozen=True, slots=True)
class ReportSchedule:
    """Daily at ``at`` (UTC); ``misfire_grace`` only bounds how far back a run's first report reaches."""

    at: time = REPORT_TIME_UTC
    misfire_grace: timedelta = timedelta(hours=2)


def first_report_boundary(
    first_seen: datetime, schedule: ReportSchedule, wall_now: datetime | None = None
) -> datetime:
    """The first boundary a run reports: the earliest within the misfire grace of where it began.

    A replay starting mid-day does not report the day before it (as the original scheduler's grace
    did); the live run passes ``wall_now``, so a consumer first reading days of history starts at
    the wall clock, not at last week.
    """
    since = ensure_utc(first_seen)
    if wall_now is not None:
        since = max(since, ensure_utc(wall_now))
    return next_daily_boundary(since - schedule.misfire_grace, schedule.at)


def next_unreported(last_fired: datetime, schedule: ReportSchedule) -> datetime:
    """The boundary after the last one reported."""
    return last_daily_boundary(last_fired, schedule.at) + DAY


def reports_due(now: datetime, next_boundary: datetime, schedule: ReportSchedule) -> tuple[datetime, ...]:
    """Every boundary from ``next_boundary`` that event time ``now`` has reached, oldest first.

    Event time may jump days between two checks (a replay at speed, a consumer catching up after
    an outage): every day passed still gets its report, in order; none is skipped (§12 rebuild:
    fire once when event time passes the boundary, never twice, the claim per boundary does that).
    """
    latest = last_daily_boundary(now, schedule.at)
    out: list[datetime] = []
    boundary = ensure_utc(next_boundary)
    while boundary <= latest:
        out.append(boundary)
        boundary += DAY
    return tuple(out)


def report_boundary(report_date: date) -> datetime:
    """22:00 KST of ``report_date`` as UTC: the end of that report's window."""
    return ensure_utc(datetime.combine(report_date, REPORT_TIME_KST, tzinfo=KST))


def report_date_of(boundary: datetime) -> date:
    return ensure_utc(boundary).astimezone(KST).date()


def report_window(report_date: date) -> tuple[datetime, datetime]:
    """[previous 22:00 KST, this 22:00 KST): every instant belongs to exactly one report."""
    end = report_boundary(report_date)
    return end - DAY, end
