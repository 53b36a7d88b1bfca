"""Is a 1-minute candle fit to be stored and traded on? The trust boundary of market data (issue 19).

Pure: the caller passes the subject a candle arrived on, what it accepted before for that symbol
(a :class:`Track`) and, in the live run only, the wall clock. Every consumer of ``candles.1m.>``
(the collector's recorder, the indicator) and the backtest's loader apply the same rules with the
same :class:`CandleSettings` (env prefix ``COINPILOT_CANDLE_``), so a candle quarantined by one is
quarantined by all. Rules, in the order they are checked (the first broken one is reported):

==================  ==========================================================================
``POSITIVE_PRICE``  open, high, low and close are > 0
``OHLC``            low <= open, close <= high (so low <= high)
``VOLUME``          volume >= 0
``CLOSED_MINUTE``   ts_event = ts_open + 1 min, ts_open a whole minute
``SUBJECT_SYMBOL``  the symbol of ``candles.1m.<SYM>`` is the body's symbol
``PAST_TIME``       not before ``EARLIEST`` (2009-01-03), nor more than ``MAX_BEHIND_MINUTES``
                    before the last accepted candle (behind the indicator's 200-candle window)
``FUTURE_TIME``     live: ``ts_event`` not after the wall clock + ``CLOCK_SKEW_SECONDS`` (the clock
                    is the truth there: after a collector outage the next real candle is hours
                    ahead of the last one). Replays and backtests (event time only): at most
                    ``MAX_AHEAD_MINUTES`` after the last accepted candle; nothing bounds the first
``MOVE_BREAKER``    |close / last accepted close - 1| <= ``MAX_MOVE_PCT`` % (float64 on every
                    path, so the backtest's vectorised screen decides exactly as a service)
==================  ==========================================================================

A jump (event-time FUTURE_TIME or MOVE_BREAKER) is refused and remembered as the symbol's pending
jump. A candle that breaks the rule against the last accepted one but not against the pending
jump (it opens after it, within the same bounds) confirms it: the market really moved (or resumed
after a long gap in recorded data), so it is accepted. One forged candle is refused and the next
real one continues as before; a real crash or gap costs its first candle (quarantined and alerted,
for an operator to look at), never the rest of the run. Any accepted candle clears the pending one.

``CONFLICTING_REPUBLISH`` (a closed minute again with other values) needs the stored candle, so
the recorder decides it in SQL (``coinpilot.db.market.insert_candles``); the name lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.contracts import AlertLevel, AlertType, MinuteCandle, RiskAlert
from coinpilot.errors import ContractError, RefusedMessage

ONE_MINUTE = timedelta(minutes=1)
SUBJECT_PREFIX = "candles.1m."
GENESIS = datetime(2009, 1, 3, tzinfo=UTC)
"""Bitcoin's genesis block: no crypto market has a candle before it (a 1970 candle is forged)."""


class CandleRule(StrEnum):
    POSITIVE_PRICE = "POSITIVE_PRICE"
    OHLC = "OHLC"
    VOLUME = "VOLUME"
    CLOSED_MINUTE = "CLOSED_MINUTE"
    SUBJECT_SYMBOL = "SUBJECT_SYMBOL"
    PAST_TIME = "PAST_TIME"
    FUTURE_TIME = "FUTURE_TIME"
    MOVE_BREAKER = "MOVE_BREAKER"
    CONFLICTING_REPUBLISH = "CONFLICTING_REPUBLISH"


JUMPS = (CandleRule.FUTURE_TIME, CandleRule.MOVE_BREAKER)


class CandleSettings(BaseSettings):
    """The candle rules' bounds, shared by every consumer of candles (``COINPILOT_CANDLE_*``)."""

    model_config = SettingsConfigDict(env_prefix="COINPILOT_CANDLE_", extra="ignore", frozen=True)

    max_ahead_minutes: int = Field(
        default=360,
        ge=1,
        description="Replays/backtests: how far a candle may open after the last accepted one "
        "(the real data's longest gap is 81 min; TIME_LIMIT is 24 h at the least)",
    )
    max_behind_minutes: int = Field(
        default=200, ge=0, description="How far a candle may open before the last accepted one (the window)"
    )
    clock_skew_seconds: float = Field(
        default=120.0, ge=0, description="Live: how far ts_event may be ahead of the wall clock"
    )
    max_move_pct: float = Field(
        default=20.0,
        gt=0,
        description="One-minute move breaker, close vs the last accepted close, percent "
        "(the largest real move in shared/data is 5.26 %, DOGE)",
    )
    earliest: datetime = Field(default=GENESIS, description="No candle opens before this")

    def limits(self) -> CandleLimits:
        return CandleLimits(
            max_ahead=timedelta(minutes=self.max_ahead_minutes),
            max_behind=timedelta(minutes=self.max_behind_minutes),
            clock_skew=timedelta(seconds=self.clock_skew_seconds),
            max_move=self.max_move_pct / 100.0,
            earliest=self.earliest if self.earliest.tzinfo else self.earliest.replace(tzinfo=UTC),
        )


def _span_ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class CandleLimits:
    """The bounds as the checks use them (built once from :class:`CandleSettings`)."""

    max_ahead: timedelta = timedelta(minutes=360)
    max_behind: timedelta = timedelta(minutes=200)
    clock_skew: timedelta = timedelta(seconds=120)
    max_move: float = 0.20
    earliest: datetime = GENESIS
    ahead_ms: int = field(init=False)
    behind_ms: int = field(init=False)

    def __post_init__(self) -> None:  # the spans in ms once, not on every candle
        object.__setattr__(self, "ahead_ms", _span_ms(self.max_ahead))
        object.__setattr__(self, "behind_ms", _span_ms(self.max_behind))


def _ms(ts: datetime) -> int:
    return int(ts.timestamp()) * 1000


class Point(NamedTuple):
    """What the rules need of an earlier candle: its open time (epoch ms) and close (float64).

    Tuples, not frozen dataclasses: two are built per candle on the hot consumers' path."""

    ts_ms: int
    close: float

    @classmethod
    def of(cls, candle: MinuteCandle) -> Point:
        return cls(int(candle.ts_open.timestamp()) * 1000, float(candle.close))


class Track(NamedTuple):
    """A consumer's view of one symbol: the last accepted candle and the pending jump, if any."""

    last: Point | None = None
    pending: Point | None = None

    def accept(self, point: Point) -> Track:
        return Track(point, None) if self.last is None or point.ts_ms > self.last.ts_ms else self


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: CandleRule
    message: str
    jump: bool = False  # remembered as the pending jump


def subject_symbol(subject: str) -> str:
    return subject[len(SUBJECT_PREFIX) :] if subject.startswith(SUBJECT_PREFIX) else subject


def moved_too_far(close: float, last_close: float, max_move: float) -> bool:
    """The breaker, one formula for the scalar and the vectorised path (IEEE float64 either way)."""
    return bool(abs(close / last_close - 1.0) > max_move)


def _jump(ts_ms: int, close: float, ref: Point, limits: CandleLimits, event_time: bool) -> CandleRule | None:
    """The jump rule a candle after ``ref`` breaks against it, if any."""
    if event_time and ts_ms - ref.ts_ms > limits.ahead_ms:
        return CandleRule.FUTURE_TIME
    if ts_ms > ref.ts_ms and moved_too_far(close, ref.close, limits.max_move):
        return CandleRule.MOVE_BREAKER
    return None


def sequence_rule(
    ts_ms: int, close: float, track: Track, limits: CandleLimits, *, event_time: bool = True
) -> CandleRule | None:
    """The rules against the symbol's track (PAST_TIME behind the window, the jumps), in ints and
    floats: the services and the backtest's screen share this one function."""
    last = track.last
    if last is None:
        return None
    if ts_ms < last.ts_ms - limits.behind_ms:
        return CandleRule.PAST_TIME
    rule = _jump(ts_ms, close, last, limits, event_time)
    if rule is None:
        return None
    pending = track.pending
    if (
        pending is not None
        and ts_ms > pending.ts_ms
        and _jump(ts_ms, close, pending, limits, event_time) is None
    ):
        return None  # it confirms the pending jump
    return rule


_ZERO = Decimal(0)


def check_shape(candle: MinuteCandle) -> Refusal | None:
    """The rules that need nothing but the candle."""
    o, h, lo, c, v = candle.open, candle.high, candle.low, candle.close, candle.volume
    start = candle.ts_open
    if (  # the usual case in six comparisons (a positive low in order makes every price positive)
        _ZERO < lo <= o <= h
        and lo <= c <= h
        and v >= _ZERO
        and not (start.second or start.microsecond)
        and candle.ts_event - start == ONE_MINUTE
    ):
        return None
    if not (o > _ZERO and h > _ZERO and lo > _ZERO and c > _ZERO):
        return Refusal(CandleRule.POSITIVE_PRICE, f"prices must be > 0: o={o} h={h} l={lo} c={c}")
    if not (lo <= o <= h and lo <= c <= h):
        return Refusal(CandleRule.OHLC, f"need low <= open, close <= high: o={o} h={h} l={lo} c={c}")
    if not v >= _ZERO:
        return Refusal(CandleRule.VOLUME, f"volume must be >= 0: {v}")
    return Refusal(CandleRule.CLOSED_MINUTE, f"not a closed minute: {start} .. {candle.ts_event}")


def _minute(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%dT%H:%M}Z"


def check_candle(
    subject: str,
    candle: MinuteCandle,
    track: Track,
    limits: CandleLimits,
    *,
    now: datetime | None = None,
    point: Point | None = None,
) -> Refusal | None:
    """The first rule ``candle`` (arrived on ``subject``) breaks, or None when it may be used.

    ``track``: what this consumer accepted before for the symbol. ``now``: the wall clock in the
    live run only; replays and backtests pass None and use event time only. ``point``: the
    candle's ``Point``, if the caller has it already.
    """
    refusal = check_shape(candle)
    if refusal is not None:
        return refusal
    if subject_symbol(subject) != candle.symbol:
        return Refusal(CandleRule.SUBJECT_SYMBOL, f"published on {subject} but the candle is {candle.symbol}")
    start = candle.ts_open
    if start < limits.earliest:
        return Refusal(CandleRule.PAST_TIME, f"{start:%Y-%m-%dT%H:%M}Z is before {limits.earliest:%Y-%m-%d}")
    if now is not None and candle.ts_event > now + limits.clock_skew:
        return Refusal(
            CandleRule.FUTURE_TIME, f"closes at {candle.ts_event:%Y-%m-%dT%H:%M}Z, after the clock ({now})"
        )
    point = point or Point.of(candle)
    rule = sequence_rule(point.ts_ms, point.close, track, limits, event_time=now is None)
    if rule is None:
        return None
    last = track.last
    assert last is not None  # sequence_rule refuses nothing without a last candle
    if rule is CandleRule.PAST_TIME:
        detail = f"more than {limits.max_behind} before the last accepted candle {_minute(last.ts_ms)}"
    elif rule is CandleRule.FUTURE_TIME:
        detail = f"more than {limits.max_ahead} after the last accepted candle {_minute(last.ts_ms)}"
    else:
        detail = (
            f"close {candle.close} moved more than {limits.max_move:.2%} from {last.close} (last accepted)"
        )
    return Refusal(rule, f"{start:%Y-%m-%dT%H:%M}Z: {detail}", jump=rule in JUMPS)


def rejection_alert(candle: MinuteCandle, subject: str, rule: str, message: str) -> RiskAlert:
    """The ``risk.alerts`` WARNING of a quarantined candle: one per (symbol, minute), whoever sends it."""
    return RiskAlert(
        ts_event=candle.ts_open + ONE_MINUTE,
        type=AlertType.CANDLE_REJECTED,
        level=AlertLevel.WARNING,
        message=f"candle on {subject} at {candle.ts_open:%Y-%m-%dT%H:%M}Z quarantined: {rule}: {message}",
        symbol=candle.symbol,
    )


def refuse(candle: MinuteCandle, subject: str, rule: str, message: str) -> RefusedMessage:
    """The error a consumer raises: the ladder dead-letters the candle and publishes the alert."""
    return RefusedMessage(rule, message, alerts=(rejection_alert(candle, subject, rule, message),))


class CandleGate:
    """One consumer's :class:`Track` per (run id, symbol), and the checks against it.

    ``admit`` checks a run of candles against the tracks as they would be after each one (a
    refused candle never becomes the last accepted) and returns the tracks to ``commit`` once the
    run's effects are kept: a run that fails leaves the accepted candles as they were, so its
    candles, handled again one at a time, meet the same state. A refused jump is remembered at
    once (the refusal is final; a run handled again sets it again after its earlier candles).
    """

    def __init__(self, limits: CandleLimits, live_run: str) -> None:
        self.limits = limits
        self.live_run = live_run  # the run whose candles meet the wall clock (the bus's LIVE_RUN)
        self.tracks: dict[tuple[str, str], Track] = {}

    def admit(
        self, items: Sequence[tuple[str, MinuteCandle, str]], now: datetime | None
    ) -> dict[tuple[str, str], Track]:
        """``items``: (subject, candle, run id). Raises :class:`RefusedMessage` for the first
        candle that breaks a rule; ``now`` is applied to the live run's candles only."""
        ahead: dict[tuple[str, str], Track] = {}
        for subject, candle, run_id in items:
            key = (run_id, candle.symbol)
            track = ahead.get(key) or self.tracks.get(key) or Track()
            point = Point.of(candle)
            refusal = check_candle(
                subject, candle, track, self.limits, now=now if run_id == self.live_run else None, point=point
            )
            if refusal is not None:
                if refusal.jump:
                    base = self.tracks.get(key) or Track()
                    self.tracks[key] = Track(base.last, point)
                raise refuse(candle, subject, refusal.rule, refusal.message)
            ahead[key] = track.accept(point)
        return ahead

    def commit(self, ahead: Mapping[tuple[str, str], Track]) -> None:
        self.tracks.update(ahead)


# The candle's fields without its shape check, so the checks above (not the parser) refuse an
# inconsistent candle: it is then dead-lettered with its rule and alerted, not only dead-lettered.
_Fields: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "CandleFields",
    __config__=ConfigDict(extra="forbid"),
    **{name: (info.annotation, info) for name, info in MinuteCandle.model_fields.items()},
)


def parse_candle(subject: str, body: bytes) -> MinuteCandle:
    """The consumers' parser: a well-typed candle whose shape is wrong is still returned (built
    without validation), for :func:`check_candle` to refuse; anything else is a ContractError."""
    if not subject.startswith(SUBJECT_PREFIX):
        raise ContractError(f"no contract for subject {subject!r}")
    try:
        return MinuteCandle.from_json(body)
    except ContractError as exc:
        try:
            fields: Mapping[str, Any] = dict(_Fields.model_validate_json(body))
        except ValidationError:
            raise exc from None
        candle = MinuteCandle.model_construct(**fields)
        if check_shape(candle) is None:  # another contract rule broke: keep the parser's verdict
            raise
        return candle


def screen_columns(
    ts_ms: npt.NDArray[np.int64],
    columns: Mapping[str, npt.NDArray[np.float64]],
    limits: CandleLimits,
) -> list[tuple[int, CandleRule]]:
    """The rows of one symbol's series (open times strictly increasing) a service would refuse,
    with their rules, event time only. Vectorised; candle by candle (:func:`sequence_rule`) only
    from the first row that breaks a jump rule against the row before it."""
    o, h, lo, c, v = (columns[k] for k in ("open", "high", "low", "close", "volume"))
    rules = np.full(len(ts_ms), -1, dtype=np.int8)
    order = list(CandleRule)
    for rule, broken in (  # later assignments first, so the first broken rule is the one kept
        (CandleRule.PAST_TIME, ts_ms < _ms(limits.earliest)),
        (CandleRule.VOLUME, ~(v >= 0)),
        (CandleRule.OHLC, ~((lo <= o) & (o <= h) & (lo <= c) & (c <= h))),
        (CandleRule.POSITIVE_PRICE, ~((o > 0) & (h > 0) & (lo > 0) & (c > 0))),
    ):
        rules[broken] = order.index(rule)
    kept = np.flatnonzero(rules < 0)
    if len(kept) > 1:
        step = np.diff(ts_ms[kept])
        move = np.abs(c[kept][1:] / c[kept][:-1] - 1.0)
        bad = np.flatnonzero((step > limits.ahead_ms) | (move > limits.max_move))
        if len(bad):
            first = int(kept[bad[0]])
            track = Track(Point(int(ts_ms[first]), float(c[first])))
            for i in kept[bad[0] + 1 :].tolist():
                point = Point(int(ts_ms[i]), float(c[i]))
                rule = sequence_rule(point.ts_ms, point.close, track, limits)
                if rule is None:
                    track = track.accept(point)
                else:
                    rules[i] = order.index(rule)
                    if rule in JUMPS:
                        track = Track(track.last, point)
    return [(int(i), order[rules[i]]) for i in np.flatnonzero(rules >= 0).tolist()]
