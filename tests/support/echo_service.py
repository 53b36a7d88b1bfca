"""A tiny plug-in service for runtime tests: candles.1m in, indicators.1m out.

Behaviour is steered by the candle's volume, so tests can script failures from outside:
volume 13 -> always raises (keeps failing), volume 7 -> blocks until the file named by
ECHO_RELEASE_FILE exists (an in-flight message during SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from coinpilot.bus import parser_for
from coinpilot.contracts import Contract, IndicatorSnapshot, MinuteCandle, Regime
from coinpilot.errors import TransientError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition

ALWAYS_FAILS = Decimal(13)
BLOCKS = Decimal(7)


def echo(candle: MinuteCandle) -> IndicatorSnapshot:
    return IndicatorSnapshot(
        symbol=candle.symbol, ts_event=candle.ts_event, candle=candle, regime=Regime.UNKNOWN, bars_seen=1
    )


def build(rt: Runtime) -> ServiceDefinition:
    release = Path(os.environ.get("ECHO_RELEASE_FILE", "/nonexistent"))

    async def on_candle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        candle = d.message
        if candle.volume == ALWAYS_FAILS:
            raise TransientError("scripted failure")
        if candle.volume == BLOCKS:
            while not release.exists():
                await asyncio.sleep(0.05)
        return [echo(candle)]

    return ServiceDefinition(
        name="echo",
        consumers=[
            Consumer(
                subject="candles.1m.*",
                durable="echo-candles",
                handler=on_candle,
                parse=parser_for(MinuteCandle),
            )
        ],
    )


def build_batches(rt: Runtime) -> ServiceDefinition:
    """The same echo as a batch consumer (one handler call per fetched run), for bench_hop."""

    async def on_candles(ds: Sequence[Delivery[MinuteCandle]]) -> list[Sequence[Contract]]:
        return [[echo(d.message)] for d in ds]

    return ServiceDefinition(
        name="echo",
        consumers=[Consumer.of_batches("candles.1m.*", "echo-batches", on_candles, parser_for(MinuteCandle))],
    )
