"""One service hop (publish -> handler -> publish) over a real NATS JetStream, messages/s.

Compares, in the same run and on the same private nats-server:
  raw      nats-py pull consumer that forwards each body to the next subject and acks
  runtime  CoinPilot's ServiceHost (its pull loop + our ladder), one message at a time: parse the
           contract, build the output contract, publish with standard headers and dedup id, ack
  batches  the same as a batch consumer (``Consumer.of_batches``): a fetched run per handler call,
           its outputs published back to back, then the acks (what indicator/strategy/recorder do)
Each side drains N pre-published candles; throughput = N / time to the last output stored.
Usage: python bench/bench_hop.py [N]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.host import ServiceHost
from coinpilot.bus import Bus, ensure_streams
from coinpilot.settings import CommonSettings
from tests.support.messages import candle
from tests.support.servers import NatsProcess


async def preload(js, n: int, symbol: str) -> None:
    bus = Bus(js, "bench")
    pending = [bus.publish(candle(i, symbol=symbol), run_id="live") for i in range(n)]
    for i in range(0, n, 500):
        await asyncio.gather(*pending[i : i + 500])


async def wait_outputs(js, stream: str, subject: str, n: int) -> None:
    while True:
        info = await js.stream_info(stream, subjects_filter=subject)
        if (info.state.subjects or {}).get(subject, 0) >= n:
            return
        await asyncio.sleep(0.01)


async def raw_hop(url: str, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await preload(js, n, "KRW-RAW")
    sub = await js.pull_subscribe("candles.1m.KRW-RAW", durable="bench-raw", stream="CANDLES")
    started = time.perf_counter()
    done = 0
    while done < n:
        for msg in await sub.fetch(32, timeout=5):
            await js.publish("indicators.1m.KRW-RAW", msg.data, headers={"Nats-Msg-Id": f"raw:{done}"})
            await msg.ack()
            done += 1
    await wait_outputs(js, "INDICATORS", "indicators.1m.KRW-RAW", n)
    elapsed = time.perf_counter() - started
    await nc.close()
    return n / elapsed


async def runtime_hop(url: str, n: int, service: str, symbol: str) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.purge_stream("CANDLES")  # the echo consumer reads candles.1m.*: only this run's candles
    await preload(js, n, symbol)
    settings = CommonSettings(nats_url=url, database_url="", redis_url="", pull_batch_size=32)
    host = ServiceHost([f"tests.support.echo_service:{service}"], settings, serve_http=False)
    started = time.perf_counter()
    await host.start()
    await wait_outputs(js, "INDICATORS", f"indicators.1m.{symbol}", n)
    elapsed = time.perf_counter() - started
    await host.stop()
    await nc.close()
    return n / elapsed


async def main(n: int) -> None:
    server = NatsProcess()
    server.start()
    try:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream())
        await nc.close()
        raw = await raw_hop(server.url, n)
        ours = await runtime_hop(server.url, n, "build", "KRW-CP")
        batched = await runtime_hop(server.url, n, "build_batches", "KRW-CPB")
    finally:
        server.close()
    print(f"one hop over real NATS JetStream, {n} messages, one consumer")
    print(f"  raw nats-py hop (fetch 32)             {raw:10,.0f} msg/s")
    print(f"  CoinPilot runtime hop, one at a time   {ours:10,.0f} msg/s   ({ours / raw:.0%} of raw)")
    print(f"  CoinPilot runtime hop, batch consumer  {batched:10,.0f} msg/s   ({batched / raw:.0%} of raw)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BENCH_N", "5000"))))
