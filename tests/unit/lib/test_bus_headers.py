"""Reading the standard headers of a delivered message, whatever shape nats-py gave them in."""

from __future__ import annotations

from datetime import UTC, datetime

from coinpilot.bus import headers as h


def test_string_headers_are_kept_as_they_are() -> None:
    raw = {h.RUN_ID: "live", h.TRACE_ID: "t-1"}
    assert h.of_message(raw) == raw
    assert h.of_message(None) == {} and h.of_message({}) == {}


def test_a_list_per_name_becomes_its_last_value() -> None:
    raw = {h.RUN_ID: ["replay-1"], h.TRACE_ID: ["old", "new"], "Empty": [], "Raw": [b"caf\xc3\xa9"]}
    assert h.of_message(raw) == {h.RUN_ID: "replay-1", h.TRACE_ID: "new", "Empty": "", "Raw": "café"}


def test_published_at_is_none_for_a_missing_or_unreadable_value() -> None:
    sent = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    assert h.published_at({h.PUBLISHED_AT: sent.isoformat()}) == sent
    assert h.published_at({}) is None
    assert h.published_at({h.PUBLISHED_AT: "yesterday"}) is None
    assert h.published_at({h.PUBLISHED_AT: ["2026-11-24T08:00:00+00:00"]}) is None  # type: ignore[dict-item]
