"""Stage replay in process (``coinpilot replay-stage``): how fast one stage of a recorded run re-runs.

A run is recorded without the services, as fast as the backtest makes it: the bundled sample's
last ``--hours`` go through the backtest engine's live path (the services' own handlers over
memory), and every message it sent, each candle first, is published under one run id into a
NATS of its own (a real nats-server), one ack at a time, so the streams' timestamps keep the
engine's causal order across streams (as a lockstep run's do). Then each replay reads the run
back from JetStream and re-runs its stage with unchanged parameters, timed from the read to the
diff: risk alone, the executor alone, and the trading loop (strategy through the executor). Each
prints its inputs, seconds (read and replay apart), inputs per second, whether the outputs are the
recording's byte for byte, and the process's peak RSS. Asserts nothing about time.

Usage: python bench/bench_stage_replay.py [--hours 72]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.backtest.settings import ModeSettings
from apps.demo import sample_files, split_warmup
from apps.stage_replay import executor_stage, loop_stage, risk_stage
from apps.stage_replay.loop_stage import RecordingEngine
from apps.stage_replay.recorded import read_run
from apps.stage_replay.run import HISTORY
from coinpilot.bus import ensure_streams
from coinpilot.bus.publisher import Bus
from coinpilot.candle_files import load_candles
from coinpilot.contracts import Contract, MinuteCandle
from tests.support.servers import NatsProcess


class CandleRecordingEngine(RecordingEngine):
    """The engine's live path, keeping each candle before the messages it causes."""

    async def on_candle(self, candle: MinuteCandle) -> None:
        self.sent.append(candle)
        await super().on_candle(candle)


async def record(
    js: nats.js.JetStreamContext, warm: list[MinuteCandle], window: list[MinuteCandle], run_id: str
) -> tuple[int, float]:
    engine = CandleRecordingEngine(run_id, None, settings=ModeSettings.from_environment())
    engine.warm(warm)
    started = time.perf_counter()
    await engine.run(window)
    bus = Bus(js, "operator")
    messages: list[Contract] = engine.sent
    for m in messages:  # one ack at a time: the streams' timestamps then keep the causal order across streams
        await bus.publish(m, run_id=run_id)
    return len(messages), time.perf_counter() - started


async def timed(name: str, js: nats.js.JetStreamContext, run_id: str, subjects, refused_by, replay) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    recorded = await read_run(js, run_id, subjects, refused_by=refused_by)
    read = time.perf_counter() - started
    diff = await replay(recorded)
    total = time.perf_counter() - started
    inputs = len(recorded)
    print(
        f"{name:<22} {inputs:>8,} msgs  read {read:6.2f} s  replay {total - read:6.2f} s  "
        f"{inputs / total:>9,.0f} msgs/s  identical={diff.identical_outputs}  changed={len(diff.changed)}"
    )


async def main(hours: float) -> None:
    server = NatsProcess()
    server.start()
    settings = ModeSettings.from_environment()
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js)
        warm, window = split_warmup(load_candles(sample_files()), hours)
        count, seconds = await record(js, warm, window, run_id)
        print(f"recorded {count:,} messages of {hours:g} h x 2 symbols in {seconds:.2f} s (engine + publish)")
        history = [c for c in warm if c.ts_open >= window[0].ts_open - HISTORY]  # what market_data holds

        async def risk(recorded):  # type: ignore[no-untyped-def]
            return (await risk_stage.replay_risk(recorded, original_run=run_id, replay_run=f"{run_id}-r",
                                                 settings=settings))[0]  # fmt: skip

        async def executor(recorded):  # type: ignore[no-untyped-def]
            return (await executor_stage.replay_executor(
                recorded, original_run=run_id, replay_run=f"{run_id}-e", settings=settings))[0]  # fmt: skip

        async def loop(recorded):  # type: ignore[no-untyped-def]
            diff, _ = await loop_stage.replay_loop(
                recorded, history, original_run=run_id, replay_run=f"{run_id}-l", settings=settings
            )
            return diff

        risk_subjects = (*risk_stage.INPUTS, *risk_stage.OUTPUTS, *risk_stage.READS)
        await timed("risk", js, run_id, risk_subjects, risk_stage.REFUSED_BY, risk)
        executor_subjects = (*executor_stage.INPUTS, *executor_stage.OUTPUTS, *executor_stage.READS)
        await timed("executor", js, run_id, executor_subjects, executor_stage.REFUSED_BY, executor)
        loop_subjects = (*loop_stage.INPUTS, *loop_stage.OUTPUTS)
        await timed("strategy..executor", js, run_id, loop_subjects, loop_stage.REFUSED_BY, loop)
        await nc.close()
    finally:
        server.close()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=72.0, help="Hours at the end of the sample recorded")
    asyncio.run(main(parser.parse_args().hours))
