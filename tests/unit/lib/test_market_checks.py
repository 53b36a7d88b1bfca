"""The candle rules of the trust boundary (coinpilot.market_checks), table-driven, and the backtest's
vectorised screen against the scalar rules it must equal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from coinpilot.contracts import AlertLevel, AlertType, MinuteCandle
from coinpilot.errors import ContractError, RefusedMessage
from coinpilot.market_checks import (
    CandleGate,
    CandleLimits,
    CandleRule,
    CandleSettings,
    Point,
    Track,
    check_candle,
    parse_candle,
    screen_columns,
)

T = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
LIMITS = CandleLimits()
SYM = "KRW-BTC"


def candle(
    minute: int = 0, o: str = "100", h: str = "110", lo: str = "90", c: str = "105", v: str = "1", **kw
):  # type: ignore[no-untyped-def]
    start = T + minute * MINUTE
    fields = (
        dict(
            symbol=SYM,
            ts_open=start,
            ts_event=start + MINUTE,
            open=Decimal(o),
            high=Decimal(h),
            low=Decimal(lo),
            close=Decimal(c),
            volume=Decimal(v),
        )
        | kw
    )
    return MinuteCandle.model_construct(**fields)  # unvalidated, as parse_candle hands a misshapen one


LAST = Track(Point(int((T - MINUTE).timestamp()) * 1000, 100.0))
NONE = Track()


def after_jump(minute: int, close: float) -> Track:
    """LAST with a refused jump pending at ``minute`` (close ``close``)."""
    return Track(LAST.last, Point(int((T + minute * MINUTE).timestamp()) * 1000, close))


CASES = [
    # (name, candle, last, now, expected rule or None)
    ("a good candle", candle(), LAST, None, None),
    ("the first candle, nothing accepted yet", candle(), NONE, None, None),
    ("zero open", candle(o="0"), LAST, None, CandleRule.POSITIVE_PRICE),
    ("negative low", candle(lo="-1"), LAST, None, CandleRule.POSITIVE_PRICE),
    ("zero everything", candle(o="0", h="0", lo="0", c="0"), LAST, None, CandleRule.POSITIVE_PRICE),
    ("high below close", candle(h="104"), LAST, None, CandleRule.OHLC),
    ("low above open", candle(lo="101"), LAST, None, CandleRule.OHLC),
    ("high below low", candle(o="100", h="90", lo="110", c="100"), LAST, None, CandleRule.OHLC),
    ("negative volume", candle(v="-0.5"), LAST, None, CandleRule.VOLUME),
    ("zero volume is a quiet minute", candle(v="0"), LAST, None, None),
    ("not a closed minute", candle(ts_event=T + 2 * MINUTE), LAST, None, CandleRule.CLOSED_MINUTE),
    (
        "dated 1970",
        candle(ts_open=datetime(1970, 1, 1, tzinfo=UTC), ts_event=datetime(1970, 1, 1, 0, 1, tzinfo=UTC)),
        NONE,
        None,
        CandleRule.PAST_TIME,
    ),
    ("behind the window", candle(-202), LAST, None, CandleRule.PAST_TIME),
    ("older but within the window (a redelivery)", candle(-150), LAST, None, None),
    ("six hours ahead in a replay", candle(359), LAST, None, None),
    ("more than six hours ahead in a replay", candle(362), LAST, None, CandleRule.FUTURE_TIME),
    ("far ahead of the last one live, but not of the clock", candle(600), LAST, T + 700 * MINUTE, None),
    ("ahead of the live clock", candle(10), LAST, T, CandleRule.FUTURE_TIME),
    ("ahead of the live clock with nothing accepted", candle(5), NONE, T, CandleRule.FUTURE_TIME),
    ("closing within the clock's skew", candle(0), NONE, T, None),
    ("close = 1 after 100", candle(lo="1", c="1"), LAST, None, CandleRule.MOVE_BREAKER),
    ("close 20 % up is the limit", candle(h="121", c="120"), LAST, None, None),
    ("close 21 % up", candle(h="121", c="121"), LAST, None, CandleRule.MOVE_BREAKER),
    ("close 25 % down", candle(o="80", lo="70", c="75"), LAST, None, CandleRule.MOVE_BREAKER),
    ("a move with nothing accepted yet", candle(lo="1", c="1"), NONE, None, None),
    (
        "a second candle at the new level confirms a crash",
        candle(1, o="60", h="62", lo="58", c="60"),
        after_jump(0, 61.0),
        None,
        None,
    ),
    (
        "but not one at a third level",
        candle(1, o="30", h="32", lo="28", c="30"),
        after_jump(0, 61.0),
        None,
        CandleRule.MOVE_BREAKER,
    ),
    (
        "nor one before the jump",
        candle(3, o="60", h="62", lo="58", c="60"),
        after_jump(5, 61.0),
        None,
        CandleRule.MOVE_BREAKER,
    ),
    ("a second candle after a long gap confirms it", candle(1000), after_jump(999, 104.0), None, None),
    (
        "a gap after the pending one is still a gap",
        candle(1400),
        after_jump(999, 104.0),
        None,
        CandleRule.FUTURE_TIME,
    ),
]


@pytest.mark.parametrize(("name", "c", "track", "now", "rule"), CASES, ids=[c[0] for c in CASES])
def test_each_rule(
    name: str, c: MinuteCandle, track: Track, now: datetime | None, rule: CandleRule | None
) -> None:
    refusal = check_candle(f"candles.1m.{SYM}", c, track, LIMITS, now=now)
    assert (refusal.rule if refusal else None) == rule, refusal


def test_a_candle_on_another_symbols_subject_is_refused() -> None:
    refusal = check_candle("candles.1m.KRW-XRP", candle(), LAST, LIMITS)
    assert refusal is not None and refusal.rule is CandleRule.SUBJECT_SYMBOL


def test_the_bounds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COINPILOT_CANDLE_MAX_MOVE_PCT", "50")
    monkeypatch.setenv("COINPILOT_CANDLE_MAX_AHEAD_MINUTES", "10")
    limits = CandleSettings().limits()
    assert check_candle(f"candles.1m.{SYM}", candle(h="121", c="121"), LAST, limits) is None
    refusal = check_candle(f"candles.1m.{SYM}", candle(11), LAST, limits)
    assert refusal is not None and refusal.rule is CandleRule.FUTURE_TIME


def test_the_gate_refuses_with_an_alert_and_a_refused_candle_never_becomes_the_last() -> None:
    gate = CandleGate(LIMITS, "live")
    subject = f"candles.1m.{SYM}"
    gate.commit(gate.admit([(subject, candle(0), "r1")], None))
    with pytest.raises(RefusedMessage) as refused:
        gate.admit([(subject, candle(1), "r1"), (subject, candle(2, lo="1", c="1"), "r1")], None)
    assert refused.value.rule == CandleRule.MOVE_BREAKER
    (alert,) = refused.value.alerts
    assert (alert.type, alert.level, alert.symbol, alert.ts_event) == (  # type: ignore[attr-defined]
        AlertType.CANDLE_REJECTED,
        AlertLevel.WARNING,
        SYM,
        T + 3 * MINUTE,
    )
    track = gate.tracks[("r1", SYM)]
    assert track.last == Point.of(candle(0))  # the failed run accepted nothing
    assert track.pending == Point.of(candle(2, lo="1", c="1"))  # but the jump is remembered
    gate.commit(gate.admit([(subject, candle(3), "r1")], None))  # the next real candle carries on
    assert gate.tracks[("r1", SYM)] == Track(Point.of(candle(3)))
    # another run has a state of its own; the live run meets the clock
    gate.commit(gate.admit([(subject, candle(1000), "r2")], None))
    with pytest.raises(RefusedMessage):
        gate.admit([(subject, candle(1000), "live")], T)


def body(**kw: object) -> bytes:
    data = {
        "ts_event": "2026-01-01T12:01:00Z",
        "symbol": SYM,
        "ts_open": "2026-01-01T12:00:00Z",
        "open": "100",
        "high": "110",
        "low": "90",
        "close": "105",
        "volume": "1",
    } | kw
    return json.dumps(data).encode()


def test_the_parser_hands_a_misshapen_candle_to_the_rules_and_refuses_what_is_not_a_candle() -> None:
    assert parse_candle("candles.1m.KRW-BTC", body()) == MinuteCandle.from_json(body())
    misshapen = parse_candle("candles.1m.KRW-BTC", body(high="1"))
    assert check_candle("candles.1m.KRW-BTC", misshapen, NONE, LIMITS).rule is CandleRule.OHLC  # type: ignore[union-attr]
    with pytest.raises(ContractError):
        parse_candle("candles.1m.KRW-BTC", body(symbol="nonsense"))
    with pytest.raises(ContractError):
        parse_candle("candles.1m.KRW-BTC", body(open="abc"))
    with pytest.raises(ContractError):
        parse_candle("candles.1m.KRW-BTC", body(extra=1))
    with pytest.raises(ContractError):
        parse_candle("orders.approved.KRW-BTC", body())


def scalar_screen(
    ts: np.ndarray, cols: dict[str, np.ndarray], limits: CandleLimits
) -> list[tuple[int, CandleRule]]:
    """The services' way: candle by candle, the last accepted one skipping the refused ones."""
    out, track = [], Track()
    for i in range(len(ts)):
        start = datetime.fromtimestamp(int(ts[i]) / 1000, UTC)
        c = MinuteCandle.model_construct(
            symbol=SYM,
            ts_open=start,
            ts_event=start + MINUTE,
            **{k: Decimal(repr(float(cols[k][i]))) for k in ("open", "high", "low", "close", "volume")},
        )
        refusal = check_candle(f"candles.1m.{SYM}", c, track, limits)
        if refusal:
            out.append((i, refusal.rule))
            if refusal.jump:
                track = Track(track.last, Point.of(c))
        else:
            track = track.accept(Point.of(c))
    return out


def test_the_vectorised_screen_decides_exactly_as_the_candle_by_candle_rules() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    ts = (int(T.timestamp()) * 1000 + np.cumsum(rng.choice([1, 1, 1, 2, 400], n)) * 60_000).astype(np.int64)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    close[rng.choice(n, 40)] *= rng.choice([0.5, 1.5, 0.79, 1.21], 40)  # breaker hits and near misses
    o = np.roll(close, 1)
    o[0] = close[0]
    h, lo = np.maximum(o, close) * 1.001, np.minimum(o, close) * 0.999
    v = rng.random(n)
    v[rng.choice(n, 10)] = -1.0
    lo[rng.choice(n, 10)] = 0.0
    h[rng.choice(n, 10)] *= 0.5
    cols = {"open": o, "high": h, "low": lo, "close": close, "volume": v}
    expected = scalar_screen(ts, cols, LIMITS)
    assert {rule for _, rule in expected} >= {
        CandleRule.MOVE_BREAKER,
        CandleRule.FUTURE_TIME,
        CandleRule.VOLUME,
        CandleRule.POSITIVE_PRICE,
        CandleRule.OHLC,
    }
    assert screen_columns(ts, cols, LIMITS) == expected


def test_the_screen_passes_every_real_candle_and_a_two_year_gap_costs_one(shared_data) -> None:  # type: ignore[no-untyped-def]
    """The largest real one-minute move in shared/data is 5.26 % (DOGE), the longest gap 81 min."""
    from apps.backtest.series import load_series

    for path in sorted(shared_data.glob("*.csv.gz")):
        for series in load_series([path]).values():
            assert screen_columns(series.ts_ms, series.floats, LIMITS) == [], path.name
    both = load_series(sorted(shared_data.glob("BTC_USDT-*.csv.gz")))["USDT-BTC"]
    first_of_2025 = int(np.searchsorted(both.ts_ms, int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 1000))
    assert screen_columns(both.ts_ms, both.floats, LIMITS) == [(first_of_2025, CandleRule.FUTURE_TIME)]
