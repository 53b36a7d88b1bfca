"""The agent's only SQL and Redis: the stores of :mod:`services.agent.stores` for the service.

* :class:`GuardStore` (:class:`stores.Guardrails`) - the §5.5 guardrail keys in Redis. Redis
  unreachable (refused, cut, timed out) makes the order wait in place (``TransientError``): no
  record of the keys exists elsewhere, and blocking the call instead would change the decision
  (issue 19; exits never reach the agent, so they keep flowing). An unreadable value or another
  Redis error blocks the AI call (fail closed, §5.5); both are counted. No Redis configured at all
  never blocks (the original rule). Every read or write of the keys refreshes :data:`GAUGES`
  (``coinpilot_ai_global_block``, ``coinpilot_ai_error_streak``) for the process's own run.
* :class:`DecisionStore` (:class:`stores.Decisions`) - ``agent_decisions`` and ``llm_usage_events``
  in one transaction, idempotent on ``(run_id, order_id)``; ``llm_call_records`` for record/replay;
  :class:`MarketDataHistory` (:class:`stores.MarketHistory`) - ``market_data`` reads to warm the
  hourly context.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.cache import keys
from coinpilot.cache.client import UNAVAILABLE as UNREACHABLE
from coinpilot.cache.keys import AI_GUARD_ORDER_TTL_SECONDS
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import AiDecision, AiVerdict, HourlyCandle, OrderProposed, RejectReason
from coinpilot.db.market import load_hourly_candles
from coinpilot.db.models import AgentDecision, LlmCallRecord, LlmUsageEvent, MarketData
from coinpilot.errors import TransientError
from services.agent import guard_redis_codec, guard_state
from services.agent import metrics as m
from services.agent.context import Bar, MinuteRow, resample_hourly
from services.agent.core import finite_or_none
from services.agent.guard_redis_codec import GuardKeys, Stamped, book_of, decode, gauge_reading, is_legacy
from services.agent.guard_rules import UNAVAILABLE, Block, ErrorKind, GuardParams
from services.agent.guard_state import GuardBook
from services.agent.recording import CallRecord, CallStatus
from services.agent.routing import STRATEGY_NAME

log = logging.getLogger("coinpilot.agent")
LIVE_RUN = "live"


def _int(value: object) -> int:
    if value is None:
        return 0
    return int(value.decode() if isinstance(value, bytes) else value)  # type: ignore[arg-type]


class GuardGauges:
    """The guardrail state the alerts watch, kept with the moment its Redis key expires.

    A block ends by TTL, not by a write; reading the value against its expiry at scrape time lets
    ``coinpilot_ai_global_block`` fall back to 0 when the block ends even if no order arrives to
    read the keys again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._block_until = 0.0
        self._streak = 0
        self._streak_until = 0.0

    def show(self, block_ttl: int, streak: int, streak_ttl: int) -> None:
        """Record what was read: TTLs are Redis TTL replies (-2 missing, -1 no expiry)."""
        now = self._clock()
        self._block_until = now + block_ttl if block_ttl > 0 else 0.0
        self._streak = streak
        self._streak_until = now + streak_ttl if streak_ttl > 0 else math.inf if streak_ttl == -1 else 0.0

    def global_block(self) -> float:
        """1 while a global block is active (a TTL-less key does not block: ``check_block``)."""
        return 1.0 if self._clock() < self._block_until else 0.0

    def error_streak(self) -> float:
        return float(self._streak) if self._clock() < self._streak_until else 0.0


GAUGES = GuardGauges()
m.AI_GLOBAL_BLOCK.set_function(GAUGES.global_block)
m.AI_ERROR_STREAK.set_function(GAUGES.error_streak)


Change = Callable[[GuardBook], tuple[GuardBook, Block | None]]

ADMITTED = "admitted"
SETTLED = "settled"
_STAGES = (ADMITTED, SETTLED)


@dataclass(frozen=True, slots=True)
class Once:
    """One order's step through the guardrails (``ai_guard_order``): done when the marker has
    reached ``stage`` (a settled order was admitted too)."""

    key: str
    stage: str

    def done(self, raw: bytes | str | None) -> bool:
        if raw is None:
            return False
        value = raw.decode() if isinstance(raw, bytes) else raw
        return value in _STAGES and _STAGES.index(value) >= _STAGES.index(self.stage)


def _once(run_id: str, order_id: str | None, stage: str) -> Once | None:
    return None if order_id is None else Once(keys.ai_guard_order(order_id, run_id), stage)


class GuardStore:
    """The guardrail keys of every run, on EVENT time.

    Each operation reads the keys of one (run, symbol, order ``ts_event``) into a
    :class:`GuardBook`, applies the pure :mod:`services.agent.guard_state` rule the backtest applies,
    and writes back what changed in one optimistic transaction, so the distributed agent decides
    exactly like the backtest, whatever the pace. Value formats: :mod:`services.agent.guard_redis_codec`.
    :data:`GAUGES` follow the keys of ``gauge_run_id`` only, so a replay in the same process never
    moves the live alerts."""

    def __init__(self, client: Redis | None, gauge_run_id: str = LIVE_RUN) -> None:
        self._client = client
        self._gauge_run_id = gauge_run_id
        self._deferred: list[tuple[str, str, datetime, Change, Once | None]] = []
        """Post-decision updates Redis could not take yet (oldest first)."""

    async def admit(
        self, run_id: str, symbol: str, ts: datetime, params: GuardParams, order_id: str | None = None
    ) -> Block | None:
        """The pre-call check, then the call accounting (before the call, so failures spend budget).

        With ``order_id`` an order is counted once, whichever replica and delivery asks: an order
        already admitted (its marker is set in the transaction that counted it) is admitted again
        without spending budget, so a redelivery after a crash never charges the budget twice."""
        if self._client is None:
            return None
        try:
            await self._apply_deferred(self._client)
            _, after, block = await self._transact(
                self._client,
                run_id,
                symbol,
                ts,
                lambda book: guard_state.admit(book, symbol, ts, params),
                _once(run_id, order_id, ADMITTED),
            )
        except UNREACHABLE as exc:
            m.GUARDRAIL_STORE_ERRORS.labels("admit").inc()
            raise TransientError(
                f"redis unavailable: the guardrails of {symbol} cannot be read: {exc}"
            ) from exc
        except (RedisError, ValueError) as exc:
            m.GUARDRAIL_STORE_ERRORS.labels("admit").inc()
            log.warning("guardrail check failed, blocking the AI call for %s: %s", symbol, exc)
            return UNAVAILABLE
        self._show(run_id, *gauge_reading(after, ts))
        return block

    async def after_decision(
        self,
        run_id: str,
        symbol: str,
        ts: datetime,
        approved: bool,
        error_kind: ErrorKind | None,
        params: GuardParams,
        order_id: str | None = None,
    ) -> None:
        """§5.5 post-decision update at the order's event time ``ts``, once per ``order_id`` (a
        marker set in the same transaction). Never fatal. With Redis unreachable the update is
        kept in memory and applied, in order, before the next :meth:`admit` reads the keys, so no
        later decision misses it."""
        if self._client is None:
            return

        def change(book: GuardBook) -> tuple[GuardBook, Block | None]:
            return guard_state.after_decision(book, symbol, ts, approved, error_kind, params), None

        once = _once(run_id, order_id, SETTLED)
        if self._deferred:
            self._deferred.append((run_id, symbol, ts, change, once))
            return
        try:
            before, after, _ = await self._transact(self._client, run_id, symbol, ts, change, once)
        except UNREACHABLE as exc:
            m.GUARDRAIL_STORE_ERRORS.labels("update").inc()
            log.warning("guardrail update of %s deferred until redis answers: %s", symbol, exc)
            self._deferred.append((run_id, symbol, ts, change, once))
            return
        except (RedisError, ValueError) as exc:
            m.GUARDRAIL_STORE_ERRORS.labels("update").inc()
            log.warning("guardrail update failed for %s: %s", symbol, exc)
            return
        if after.global_block is not None and (after.global_block, after.global_until) != (
            before.global_block,
            before.global_until,
        ):
            m.GLOBAL_BLOCKS.labels(str(after.global_block)).inc()
        self._show(run_id, *gauge_reading(after, ts))

    async def _apply_deferred(self, client: Redis) -> None:
        """Apply the post-decision updates an outage held back, oldest first; raises while Redis
        is still unreachable (what is left stays deferred)."""
        while self._deferred:
            run_id, symbol, ts, change, once = self._deferred[0]
            try:
                await self._transact(client, run_id, symbol, ts, change, once)
            except UNREACHABLE:
                raise
            except (RedisError, ValueError) as exc:  # as after_decision: logged, never blocks later calls
                m.GUARDRAIL_STORE_ERRORS.labels("update").inc()
                log.warning("deferred guardrail update failed for %s: %s", symbol, exc)
            self._deferred.pop(0)

    async def refresh_gauges(self) -> None:
        """Read the gauges' keys (on start: a block set before a restart shows at once). No event
        is at hand, so the expiries are read against the wall clock, as the gauges are scraped."""
        if self._client is None:
            return
        try:
            await self._read_gauges(self._client, self._gauge_run_id)
        except (RedisError, OSError, ValueError) as exc:
            m.GUARDRAIL_STORE_ERRORS.labels("refresh").inc()
            log.warning("could not read the guardrail state: %s", exc)

    async def _transact(
        self,
        client: Redis,
        run_id: str,
        symbol: str,
        now: datetime,
        change: Change,
        once: Once | None = None,
    ) -> tuple[GuardBook, GuardBook, Block | None]:
        """Read, decide, write as one WATCH/MULTI transaction; retried when another writer changed a
        key in between (each retry means that writer committed, so contention always progresses).
        Two replicas therefore never both take the last unit of a budget: the second one's
        transaction fails, re-reads the counter and is blocked."""
        k = GuardKeys.of(run_id, symbol, now)
        async with client.pipeline(transaction=True) as pipe:
            while True:
                with contextlib.suppress(WatchError):
                    return await self._attempt(pipe, k, symbol, now, change, once)

    async def _attempt(
        self, pipe: Pipeline, k: GuardKeys, symbol: str, now: datetime, change: Change, once: Once | None
    ) -> tuple[GuardBook, GuardBook, Block | None]:
        watched = (*k.all, once.key) if once is not None else k.all
        await pipe.watch(*watched)
        raw = await pipe.mget(list(watched))
        stamped = dict(zip(k.stamped, raw[:4], strict=True))
        legacy = {key: int(await pipe.pttl(key)) for key, value in stamped.items() if is_legacy(value)}

        def read(key: str) -> Stamped | None:
            return decode(stamped[key], now, legacy.get(key))

        before = book_of(
            symbol,
            now,
            global_block=read(k.global_block),
            cooldown=read(k.cooldown),
            reject_count=read(k.reject_count),
            error_streak=read(k.error_streak),
            hour_calls=_int(raw[4]),
            day_calls=_int(raw[5]),
        )
        if once is not None and once.done(raw[len(k.all)]):
            await pipe.reset()  # this order already did this step: admitted, nothing to change
            return before, before, None
        after, block = change(before)
        ops = guard_redis_codec.writes(k, symbol, now, before, after)
        if once is not None and block is None:
            ops = (*ops, guard_redis_codec.Put(once.key, once.stage, AI_GUARD_ORDER_TTL_SECONDS))
        if not ops:
            await pipe.reset()
            return before, after, block
        pipe.multi()
        for op in ops:
            if isinstance(op, guard_redis_codec.Put):
                pipe.set(op.key, op.value, ex=op.ttl_seconds)
            elif isinstance(op, guard_redis_codec.Delete):
                pipe.delete(op.key)
            else:
                pipe.incrby(op.key, op.by)
                pipe.expire(op.key, op.ttl_seconds)
        await pipe.execute()
        return before, after, block

    async def _read_gauges(self, client: Redis, run_id: str) -> None:
        now = wall_clock_now()
        block_key, streak_key = keys.ai_global_block(run_id), keys.ai_error_streak(run_id)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(block_key)
            pipe.pttl(block_key)
            pipe.get(streak_key)
            pipe.pttl(streak_key)
            block, block_pttl, streak, streak_pttl = await pipe.execute()
        book = book_of(
            "",
            now,
            global_block=decode(block, now, int(block_pttl)),
            cooldown=None,
            reject_count=None,
            error_streak=decode(streak, now, int(streak_pttl)),
            hour_calls=0,
            day_calls=0,
        )
        self._show(run_id, *gauge_reading(book, now))

    def _show(self, run_id: str, block_ttl: int, streak: int, streak_ttl: int) -> None:
        if run_id == self._gauge_run_id:
            GAUGES.show(block_ttl, streak, streak_ttl)


# -- PostgreSQL ----------------------------------------------------------------------------------


class Sessions(Protocol):
    """``coinpilot.db.Database``: ``session()`` opens a transaction that commits on exit."""

    def session(self) -> AbstractAsyncContextManager[AsyncSession]: ...


def decision_from_row(row: AgentDecision, order: OrderProposed) -> AiDecision:
    """Rebuild the published decision from its row (a redelivery re-emits exactly this)."""
    return AiDecision(
        ts_event=order.ts_event,
        order_id=row.order_id,
        symbol=row.symbol,
        decision=AiVerdict(row.decision),
        reason_code=RejectReason(row.reason_code) if row.reason_code else None,
        confidence=row.confidence,
        reasoning=row.reasoning or "",
        regime=order.regime,
        rsi=finite_or_none(order.signal.snapshot.rsi_14),
        model_used=row.model_used or "",
        prompt_hash=row.prompt_hash,
        latency_ms=row.latency_ms,
        cost_usd=row.cost_usd,
        boundary_violation=row.boundary_violation,
        boundary_terms=tuple(row.boundary_terms or ()),
    )


class DecisionStore:
    def __init__(self, db: Sessions) -> None:
        self._db = db

    async def find(self, run_id: str, order: OrderProposed) -> AiDecision | None:
        async with self._db.session() as session:
            row = await self._row(session, run_id, order.order_id)
        return None if row is None else decision_from_row(row, order)

    async def save(
        self, run_id: str, order: OrderProposed, decision: AiDecision, usage: Sequence[dict[str, Any]]
    ) -> tuple[AiDecision, bool]:
        """Store the decision once per (run_id, order_id), with its usage rows, in one transaction.

        Returns the decision that is now stored and whether this call stored it: a concurrent or
        earlier delivery that got there first wins, and its decision is the one to publish.
        """
        async with self._db.session() as session:
            stmt = (
                insert(AgentDecision)
                .values(
                    run_id=run_id,
                    order_id=order.order_id,
                    symbol=order.symbol,
                    strategy_name=STRATEGY_NAME,
                    decision=str(decision.decision),
                    reason_code=str(decision.reason_code) if decision.reason_code is not None else None,
                    reasoning=decision.reasoning,
                    confidence=decision.confidence,
                    model_used=decision.model_used,
                    prompt_hash=decision.prompt_hash,
                    price_at_decision=Decimal(order.signal.snapshot.candle.close),
                    regime=str(order.regime),
                    latency_ms=decision.latency_ms,
                    cost_usd=decision.cost_usd,
                    boundary_violation=decision.boundary_violation,
                    boundary_terms=list(decision.boundary_terms),
                    ts_event=order.ts_event,
                )
                .on_conflict_do_nothing(constraint="uq_agent_decisions_run_order")
                .returning(AgentDecision.id)
            )
            inserted = (await session.execute(stmt)).scalar_one_or_none()
            if inserted is None:
                row = await self._row(session, run_id, order.order_id)
                if row is None:  # the conflicting writer rolled back after all: decide on redelivery
                    raise TransientError(f"decision for {order.order_id} conflicted but is not stored")
                return decision_from_row(row, order), False
            if usage:
                await session.execute(
                    insert(LlmUsageEvent)
                    .values(list(usage))
                    .on_conflict_do_nothing(constraint="uq_llm_usage_events_request_id")
                )
        return decision, True

    async def _row(self, session: AsyncSession, run_id: str, order_id: str) -> AgentDecision | None:
        result = await session.execute(
            select(AgentDecision).where(AgentDecision.run_id == run_id, AgentDecision.order_id == order_id)
        )
        return result.scalar_one_or_none()


class CallRecordStore:
    """``llm_call_records``: the outcome of every live call, keyed by the sha256 of its inputs."""

    def __init__(self, db: Sessions) -> None:
        self._db = db

    async def get(self, key: str) -> CallRecord | None:
        async with self._db.session() as session:
            row = await session.get(LlmCallRecord, key)
        if row is None:
            return None
        outcome = row.response
        return CallRecord(
            key=row.key_hash,
            provider=row.provider,
            model=row.model,
            prompt_version=row.prompt_version,
            node=str(outcome.get("node", "")),
            request=row.request,
            status=CallStatus(outcome["status"]),
            response=outcome.get("response"),
            error_kind=ErrorKind(outcome["error_kind"]) if outcome.get("error_kind") else None,
            error_message=str(outcome.get("error_message", "")),
            http_status=outcome.get("http_status"),
            latency_ms=int(outcome.get("latency_ms", 0)),
        )

    async def put(self, record: CallRecord) -> None:
        outcome = {
            "node": record.node,
            "status": str(record.status),
            "response": record.response,
            "error_kind": str(record.error_kind) if record.error_kind is not None else None,
            "error_message": record.error_message,
            "http_status": record.http_status,
            "latency_ms": record.latency_ms,
        }
        async with self._db.session() as session:
            await session.execute(
                insert(LlmCallRecord)
                .values(
                    key_hash=record.key,
                    provider=record.provider,
                    model=record.model,
                    prompt_version=record.prompt_version,
                    request=dict(record.request),
                    response=outcome,
                )
                .on_conflict_do_nothing(index_elements=["key_hash"])
            )


class MarketDataHistory:
    """``market_data``'s 1m rows as hourly aggregates, summed in SQL (``load_hourly_candles``)."""

    def __init__(self, db: Sessions) -> None:
        self._db = db

    async def hourly_candles(self, symbol: str, start: datetime, end: datetime) -> Sequence[HourlyCandle]:
        async with self._db.session() as session:
            return await load_hourly_candles(session, symbol, start, end)


WARM_MINUTES = 36 * 60


async def load_closed_hours(db: Sessions, symbol: str, keep: int) -> list[Bar]:
    """The last closed hours of a symbol, resampled from ``market_data`` 1m rows (§5.2 window)."""
    async with db.session() as session:
        result = await session.execute(
            select(MarketData)
            .where(MarketData.symbol == symbol, MarketData.interval == "1m")
            .order_by(MarketData.timestamp.desc())
            .limit(WARM_MINUTES)
        )
        rows = list(result.scalars())
    if not rows:
        return []
    minutes = [
        MinuteRow(
            r.timestamp,
            float(r.open_price),
            float(r.high_price),
            float(r.low_price),
            float(r.close_price),
            float(r.volume),
        )
        for r in reversed(rows)
    ]
    newest = minutes[-1].ts_open
    # The newest row's hour is closed only if that row is its last minute.
    closed_before = newest.replace(minute=0, second=0, microsecond=0) if newest.minute != 59 else None
    return resample_hourly(minutes, closed_before=closed_before)[-keep:]
