"""Notifier decisions: which sinks, retry policy, and the event-time report schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from coinpilot.contracts import AiVerdict
from services.notifier.core import (
    AttemptStatus,
    EventType,
    NotifierParams,
    ReportSchedule,
    RetryPolicy,
    Sink,
    classify,
    event_key,
    first_report_boundary,
    next_unreported,
    plan,
    report_boundary,
    report_date_of,
    report_window,
    reports_due,
    retry_after_seconds,
    retry_delay,
)
from tests.unit.notifier.factories import ai_decision, buy_fill, daily_report, risk_alert

BOTH = NotifierParams(sinks=frozenset({Sink.DISCORD, Sink.N8N}))


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "params", "expected"),
    [
        pytest.param(
            buy_fill(), BOTH, [(Sink.DISCORD, EventType.TRADE, ""), (Sink.N8N, EventType.TRADE, "trade")]
        ),
        pytest.param(
            ai_decision(),
            NotifierParams(sinks=frozenset({Sink.N8N})),
            [(Sink.N8N, EventType.AI_DECISION, "ai-decision")],
            id="reject-goes-out-by-default",
        ),
        pytest.param(ai_decision(AiVerdict.CONFIRM), BOTH, [], id="confirm-is-filtered-by-default"),
        pytest.param(
            ai_decision(AiVerdict.CONFIRM),
            NotifierParams(frozenset({Sink.DISCORD}), frozenset({AiVerdict.CONFIRM, AiVerdict.REJECT})),
            [(Sink.DISCORD, EventType.AI_DECISION, "")],
            id="confirm-when-configured",
        ),
        pytest.param(
            risk_alert(), NotifierParams(frozenset({Sink.N8N})), [(Sink.N8N, EventType.RISK_ALERT, "risk")]
        ),
        pytest.param(
            daily_report(),
            NotifierParams(frozenset({Sink.N8N})),
            [(Sink.N8N, EventType.DAILY_REPORT, "daily-report")],
        ),
        pytest.param(buy_fill(), NotifierParams(), [], id="no-sink-configured-sends-nothing"),
    ],
)
def test_plan_sends_each_wanted_event_to_every_configured_sink(event, params, expected) -> None:
    out = plan(event, event_key(event, "live"), params)
    assert [(n.sink, n.event_type, n.path) for n in out] == expected
    assert all(n.event_key == f"live:{event.msg_id()}" for n in out)


def test_the_discord_body_is_an_embed_and_the_n8n_body_the_payload() -> None:
    discord, n8n = plan(buy_fill(), "k", BOTH)
    assert discord.body["embeds"][0]["title"] == "Trade Executed: BUY"
    assert n8n.body["side"] == "BUY" and b'"symbol":"KRW-BTC"' in n8n.body_bytes()


def test_event_keys_differ_between_runs() -> None:
    assert event_key(buy_fill(), "live") != event_key(buy_fill(), "replay-1")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, AttemptStatus.SENT),
        (201, AttemptStatus.SENT),
        (204, AttemptStatus.SENT),
        (429, AttemptStatus.RATE_LIMITED),
        (500, AttemptStatus.FAILED),
        (503, AttemptStatus.FAILED),
        (408, AttemptStatus.FAILED),
        (None, AttemptStatus.FAILED),
        (401, AttemptStatus.REJECTED),
        (400, AttemptStatus.REJECTED),
        (404, AttemptStatus.REJECTED),
        (302, AttemptStatus.REJECTED),
    ],
)
def test_classify_treats_any_2xx_as_success(status: int | None, expected: AttemptStatus) -> None:
    assert classify(status) is expected


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        pytest.param(
            {}, b'{"message": "rate limited", "retry_after": 0.25, "global": false}', 0.25, id="json-body"
        ),
        pytest.param({"Retry-After": "2"}, b"", 2.0, id="header"),
        pytest.param({"retry-after": "1.5"}, b"not json", 1.5, id="header-any-case"),
        pytest.param({"Retry-After": "9"}, b'{"retry_after": 0.5}', 0.5, id="json-wins-over-header"),
        pytest.param({}, b"{}", None, id="no-hint"),
        pytest.param({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"", None, id="http-date-is-ignored"),
    ],
)
def test_retry_after_seconds_reads_discords_hint(headers, body: bytes, expected: float | None) -> None:
    assert retry_after_seconds(headers, body) == expected


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        pytest.param(1, None, 1.0, id="first-backoff-1s"),
        pytest.param(2, None, 2.0, id="second-backoff-2s"),
        pytest.param(10, None, 30.0, id="capped"),
        pytest.param(1, 0.3, 0.3, id="server-hint-wins"),
        pytest.param(1, 3600.0, 60.0, id="absurd-hint-capped"),
    ],
)
def test_retry_delay(attempt: int, retry_after: float | None, expected: float) -> None:
    assert retry_delay(RetryPolicy(), attempt, retry_after) == expected


SCHEDULE = ReportSchedule()


@pytest.mark.parametrize(
    ("now", "next_boundary", "expected"),
    [
        pytest.param(utc(2, 12, 59), utc(2, 13), (), id="before-22-kst-nothing"),
        pytest.param(utc(2, 13, 0), utc(2, 13), (utc(2, 13),), id="exactly-22-kst-fires"),
        pytest.param(utc(2, 13, 7), utc(2, 13), (utc(2, 13),), id="first-event-after-fires"),
        pytest.param(utc(3, 0, 30), utc(3, 13), (), id="after-midnight-utc-same-kst-report-done"),
        pytest.param(utc(2, 20), utc(2, 13), (utc(2, 13),), id="late-beyond-the-grace-still-fires"),
        pytest.param(
            utc(5, 14),
            utc(2, 13),
            (utc(2, 13), utc(3, 13), utc(4, 13), utc(5, 13)),
            id="jump-of-days",
        ),
        pytest.param(utc(5, 12), utc(2, 13), (utc(2, 13), utc(3, 13), utc(4, 13)), id="stops-at-now"),
    ],
)
def test_reports_due_lists_every_boundary_passed_in_order(now, next_boundary, expected) -> None:
    assert reports_due(now, next_boundary, SCHEDULE) == expected


@pytest.mark.parametrize(
    ("first_seen", "wall_now", "expected"),
    [
        pytest.param(utc(2, 12, 59), None, utc(2, 13), id="before-22-kst-today-is-first"),
        pytest.param(utc(2, 15, 0), None, utc(2, 13), id="within-misfire-grace-reports-today"),
        pytest.param(utc(2, 15, 1), None, utc(3, 13), id="replay-beginning-after-the-grace-skips-today"),
        pytest.param(utc(2, 5), None, utc(2, 13), id="replay-beginning-mid-day-skips-yesterday"),
        pytest.param(utc(2, 5), utc(9, 14), utc(9, 13), id="live-old-history-starts-at-wall-clock"),
        pytest.param(utc(9, 14), utc(9, 14, 30), utc(9, 13), id="live-up-to-date-reports-today"),
    ],
)
def test_first_report_boundary_reaches_back_only_the_misfire_grace(first_seen, wall_now, expected) -> None:
    assert first_report_boundary(first_seen, SCHEDULE, wall_now) == expected


def test_next_unreported_is_the_day_after_the_last_report() -> None:
    assert next_unreported(utc(2, 13), SCHEDULE) == utc(3, 13)


def test_report_window_is_the_24h_ending_22_kst() -> None:
    assert report_boundary(date(2026, 3, 2)) == utc(2, 13)
    assert report_window(date(2026, 3, 2)) == (utc(1, 13), utc(2, 13))
    assert report_date_of(utc(2, 13)) == date(2026, 3, 2)


def test_retry_policy_needs_an_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_schedule_grace_is_configurable() -> None:
    assert first_report_boundary(utc(2, 18), ReportSchedule(misfire_grace=timedelta(hours=6))) == utc(2, 13)
