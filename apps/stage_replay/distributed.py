"""A stage replay published into a NATS (staging, say) instead of run in process.

The run's recorded 1m candles go, lockstep and under the replay's run id, into the target NATS,
where the target's deployed services re-run the pipeline; the replay then reads what they published
under that run id and diffs it with what the original run published. The what-if is the target's
configuration (deploy staging with the new strategy YAML, limits, prompt version or model): a
deployed service takes its settings from its own environment, so a replay cannot hand it others.

Why from the candles, whichever stage is asked: every stage downstream of the indicator reads what
the target's recorder writes as the candles arrive (``market_data``: the executor quotes from it,
risk checks prices against it, the agent builds its context from it), and the indicator is
deterministic, so its outputs in the target are the recorded ones. The stage picks the rows of the
diff (risk's verdicts per signal, the agent's decision per proposal, the executor's answer per
order); the outputs and both ledgers are always compared.

Nothing of the original run is touched: its messages are only read, the replay's carry their own
run id (every row and cache key the target's services write is keyed by it), and the candles keep
their message ids under that run id, so a replay that is restarted publishes each one once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from nats.js import JetStreamContext
from sqlalchemy import text

from apps.stage_replay import loop_stage
from apps.stage_replay.diff import BYTES, NUMBERS, StageDiff
from apps.stage_replay.pipeline_diff import pipeline_diff
from apps.stage_replay.recorded import read_run
from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.db import Database
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.replay.sources import candles_from_db

#: What the target's pipeline publishes that the diff compares (the agent's decisions included).
OUTPUTS = (*loop_stage.OUTPUTS, "ai.decisions.*")
#: Candles the collector refused in the run were no input then, and are none now.
REFUSED_BY = ("collector",)
#: A message some service dead-lettered (a forged fill, say) is no output of the pipeline.
REFUSED_OUTPUTS = ("collector", "strategy", "risk", "agent", "executor")


FROM_MARKET_DATA = "read from market_data (aged out of the stream)"


class NoRecordedCandles(ValueError):
    """Neither the streams nor the database can give the run's candles."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the replay goes: the target's JetStream, and how long its pipeline may take to drain."""

    js: JetStreamContext
    drain_timeout: float = 120.0
    outage_timeout: float = 300.0


async def run_candles(
    js: JetStreamContext,
    db: Database | None,
    run_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    skipped: Counter[str],
) -> list[MinuteCandle]:
    """The 1m candles the run consumed, in (open time, symbol) order: from the stream, or, once the
    stream no longer holds them (retention), from ``market_data`` over ``[start, end)`` for the
    symbols the run traded or watched (its rows in ``strategy_state`` and ``regime_history``)."""
    recorded = await read_run(
        js, run_id, ("candles.1m.*",), start=start, end=end, refused_by=REFUSED_BY, skipped=skipped
    )
    candles = [r.message for r in recorded if isinstance(r.message, MinuteCandle)]
    if candles:
        return sorted(candles, key=lambda c: (c.ts_open, c.symbol))
    if db is None or start is None or end is None:
        raise NoRecordedCandles(
            f"the streams hold no candles of run {run_id!r}: to read them from market_data, "
            "give --from and --to and set COINPILOT_DATABASE_URL"
        )
    symbols = await run_symbols(db, run_id)
    if not symbols:
        raise NoRecordedCandles(
            f"the database has no symbol of run {run_id!r} (strategy_state, regime_history)"
        )
    skipped[FROM_MARKET_DATA] += 1
    return [unpadded(c) for c in await candles_from_db(db, symbols, start, end)]


def unpadded(candle: MinuteCandle) -> MinuteCandle:
    """The candle as it came over the bus: ``market_data`` stores prices and volumes as
    NUMERIC(20,8), padding them with zeros the exchange did not send (1774.18 comes back as
    1774.18000000); the messages built from them would differ from the run's in those zeros."""
    fields = ("open", "high", "low", "close", "volume")
    return candle.model_copy(update={name: _without_padding(getattr(candle, name)) for name in fields})


def _without_padding(value: Decimal) -> Decimal:
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def once(messages: list[Contract]) -> list[Contract]:
    """Each message once: a replay run again under the same id republishes its outputs, which the
    stream keeps twice once they are older than its duplicate window."""
    seen: set[str] = set()
    out = []
    for m in messages:
        if (key := m.msg_id()) not in seen:
            seen.add(key)
            out.append(m)
    return out


async def run_symbols(db: Database, run_id: str) -> list[str]:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT symbol FROM strategy_state WHERE run_id = :r "
                "UNION SELECT symbol FROM regime_history WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        return sorted(r[0] for r in rows)


async def replay_into(
    source: JetStreamContext,
    target: Target,
    db: Database | None,
    *,
    stage: str,
    run_id: str,
    replay_run: str,
    start: datetime | None = None,
    end: datetime | None = None,
    target_name: str = "target",
) -> StageDiff:
    """Publish the run's candles into ``target`` as ``replay_run``, wait for its pipeline to drain,
    and diff what it published with what the run published (``stage`` picks the rows)."""
    if run_id == replay_run:
        raise ValueError("the replay needs a run id of its own (--as): it would mix with the original")
    skipped: Counter[str] = Counter()
    candles = await run_candles(source, db, run_id, start=start, end=end, skipped=skipped)
    await replay_candles(
        target.js,
        candles,
        run_id=replay_run,
        pace=parse_pace("lockstep"),
        drain_timeout=target.drain_timeout,
        outage_timeout=target.outage_timeout,
    )
    original = await read_run(
        source, run_id, OUTPUTS, start=start, end=end, refused_by=REFUSED_OUTPUTS, skipped=skipped
    )
    new = await read_run(target.js, replay_run, OUTPUTS, start=start, end=end, refused_by=REFUSED_OUTPUTS)
    diff = pipeline_diff(
        stage,
        once([r.message for r in original]),
        once([r.message for r in new]),
        label=f"{stage} (published into {target_name})",
        original_run=run_id,
        replay_run=replay_run,
        identity=NUMBERS if skipped[FROM_MARKET_DATA] else BYTES,
    )
    diff.skipped = dict(sorted(skipped.items()))
    return diff
