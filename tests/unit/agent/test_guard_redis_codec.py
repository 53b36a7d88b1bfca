"""The guardrail keys as event-time values (BEHAVIOUR §5.5 keys, rebuild): formats, reading a
book from them and what to write back after the pure guardbook rule ran."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.agent import guard_state
from services.agent.guard_redis_codec import (
    GC_MARGIN_SECONDS,
    Add,
    Delete,
    GuardKeys,
    GuardValueError,
    Put,
    Stamped,
    book_of,
    decode,
    encode,
    gauge_reading,
    gc_ttl_seconds,
    is_legacy,
    writes,
)
from services.agent.guard_rules import ErrorKind, GlobalBlock, GuardParams
from services.agent.guard_state import GuardBook, Window

T0 = datetime(2026, 2, 18, 9, 15, 30, 250_000, tzinfo=UTC)
SYM = "KRW-BTC"
P = GuardParams()
K = GuardKeys.of("live", SYM, T0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def read(
    *,
    global_block: Stamped | None = None,
    cooldown: Stamped | None = None,
    reject_count: Stamped | None = None,
    error_streak: Stamped | None = None,
    hour_calls: int = 0,
) -> GuardBook:
    """The book GuardStore reads for SYM at T0 from these values."""
    return book_of(
        SYM,
        T0,
        global_block=global_block,
        cooldown=cooldown,
        reject_count=reject_count,
        error_streak=error_streak,
        hour_calls=hour_calls,
        day_calls=0,
    )


def test_a_value_is_its_head_and_its_event_time_end_in_iso() -> None:
    assert encode(5, at(5)) == "5|2026-02-18T09:20:30.250000+00:00"
    assert decode(encode(5, at(5)).encode(), T0) == Stamped("5", at(5))


@pytest.mark.parametrize(
    ("raw", "ttl_ms", "expected"),
    [
        pytest.param(None, None, None, id="missing"),
        pytest.param(b"5", 120_000, Stamped("5", T0 + timedelta(minutes=2)), id="bare-with-ttl"),
        pytest.param(b"5", -1, Stamped("5", None), id="bare-without-ttl-inactive"),
        pytest.param("error_streak", None, Stamped("error_streak", None), id="bare-str-no-ttl-read"),
    ],
)
def test_decode_reads_missing_and_original_bare_values(
    raw: bytes | str | None, ttl_ms: int | None, expected: Stamped | None
) -> None:
    assert decode(raw, T0, ttl_ms) == expected


def test_an_unreadable_end_is_a_value_error() -> None:
    with pytest.raises(GuardValueError):
        decode(b"5|soon", T0)


def test_only_values_without_a_separator_are_legacy() -> None:
    assert [is_legacy(v) for v in (None, b"5", "5|2026-02-18T09:20:30+00:00")] == [False, True, False]


def test_the_keys_keep_the_spec_names_and_the_event_time_buckets() -> None:
    assert GuardKeys.of("demo", SYM, T0).all == (
        "run:demo:ai:guard:global:block",
        "run:demo:ai:guard:symbol:KRW-BTC:cooldown",
        "run:demo:ai:guard:symbol:KRW-BTC:reject_count",
        "run:demo:ai:guard:error_streak",
        "run:demo:ai:usage:hour:2026021809",
        "run:demo:ai:usage:day:20260218",
    )


def test_book_of_reads_the_values_into_the_guardbook_of_the_symbol() -> None:
    book = book_of(
        SYM,
        T0,
        global_block=Stamped("low_credit", at(60)),
        cooldown=Stamped("10", at(7)),
        reject_count=Stamped("2", at(25)),
        error_streak=Stamped("3", at(50)),
        hour_calls=4,
        day_calls=9,
    )
    assert book == GuardBook(
        global_block=GlobalBlock.LOW_CREDIT,
        global_until=at(60),
        cooldown_until={SYM: at(7)},
        rejects={SYM: Window(2, at(25))},
        error_streak=Window(3, at(50)),
        hour_calls={"2026021809": 4},
        day_calls={"20260218": 9},
    )


@pytest.mark.parametrize(
    "field",
    [
        {"global_block": Stamped("maintenance", None)},
        {"reject_count": Stamped("many", None)},
        {"error_streak": Stamped("", None)},
    ],
)
def test_book_of_refuses_what_it_did_not_write(field: dict[str, Stamped]) -> None:
    with pytest.raises(GuardValueError):
        read(**field)


def test_admitting_adds_one_call_to_the_event_time_hour_and_day() -> None:
    before = read()
    after, block = guard_state.admit(before, SYM, T0, P)
    assert block is None
    assert writes(K, SYM, T0, before, after) == (
        Add("ai:usage:hour:2026021809", 1, 7200),
        Add("ai:usage:day:20260218", 1, 172_800),
    )


def test_a_blocked_admit_writes_nothing() -> None:
    before = read(hour_calls=20)
    after, block = guard_state.admit(before, SYM, T0, P)
    assert block is not None and writes(K, SYM, T0, before, after) == ()


def test_a_rejection_writes_cooldown_and_window_with_gc_ttls() -> None:
    before = read()
    after = guard_state.after_decision(before, SYM, T0, False, None, P)
    assert writes(K, SYM, T0, before, after) == (
        Put(K.cooldown, encode(5, at(5)), 300 + GC_MARGIN_SECONDS),
        Put(K.reject_count, encode(1, at(30)), 1800 + GC_MARGIN_SECONDS),
    )


def test_an_ai_error_also_writes_the_streak() -> None:
    before = read()
    after = guard_state.after_decision(before, SYM, T0, False, ErrorKind.TIMEOUT, P)
    streak = Put(K.error_streak, encode(1, at(60)), 3600 + GC_MARGIN_SECONDS)
    assert writes(K, SYM, T0, before, after)[-1] == streak


def test_the_fifth_error_writes_the_global_block() -> None:
    before = read(error_streak=Stamped("4", at(10)))
    after = guard_state.after_decision(before, SYM, T0, False, ErrorKind.SERVER_ERROR, P)
    assert Put(K.global_block, encode("error_streak", at(30)), 1800 + GC_MARGIN_SECONDS) in writes(
        K, SYM, T0, before, after
    )


def test_an_approval_deletes_the_window_and_the_streak_and_keeps_the_cooldown() -> None:
    before = read(
        cooldown=Stamped("5", at(2)), reject_count=Stamped("1", at(20)), error_streak=Stamped("2", at(40))
    )
    after = guard_state.after_decision(before, SYM, T0, True, None, P)
    assert writes(K, SYM, T0, before, after) == (Delete(K.reject_count), Delete(K.error_streak))


def test_an_approval_with_nothing_set_writes_nothing() -> None:
    before = read()
    assert writes(K, SYM, T0, before, guard_state.after_decision(before, SYM, T0, True, None, P)) == ()


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        pytest.param(at(5), 300 + GC_MARGIN_SECONDS, id="whole-seconds"),
        pytest.param(T0 + timedelta(seconds=0.2), 1 + GC_MARGIN_SECONDS, id="rounded-up"),
    ],
)
def test_the_gc_ttl_is_the_event_time_left_plus_a_margin(until: datetime, expected: int) -> None:
    assert gc_ttl_seconds(until, T0) == expected


def test_the_gauges_read_what_is_active_at_event_time() -> None:
    book = GuardBook(global_until=at(30), error_streak=Window(3, at(50)))
    assert gauge_reading(book, T0) == (1800, 3, 3000)
    assert gauge_reading(book, at(60)) == (-2, 0, -2)
