"""``coinpilot tail``: follow subjects through JetStream and print each message readably."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from coinpilot.bus import headers as h
from coinpilot.bus.connect import connect
from coinpilot.bus.streams import stream_for_subject
from coinpilot.settings import CommonSettings

KEY_FIELDS = (
    "side", "regime", "reason", "exit_reason", "decision", "reason_code", "stage", "order_id",
    "close", "price", "fill_price", "quantity", "amount", "rsi_14", "confidence", "type", "level",
    "message", "service", "subject_original",
)  # fmt: skip
COLOURS = {"candles": 36, "indicators": 34, "regime": 35, "signals": 33, "orders": 32, "fills": 92, "ai": 95}


def summarize(subject: str, body: bytes, headers: dict[str, str], *, colour: bool = False) -> str:
    """One line: event time, subject, then the key fields present in the message."""
    try:
        data: dict[str, Any] = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return f"{'?':<20} {subject}  <{len(body)} bytes, not JSON>"
    if "candle" in data and isinstance(data["candle"], dict):
        data = {**data, "close": data["candle"].get("close")}
    ts = str(data.get("ts_event", headers.get(h.EVENT_TIME, "?")))[:19].replace("T", " ")
    parts = [f"{k}={_short(data[k])}" for k in KEY_FIELDS if data.get(k) not in (None, "", [], {})]
    run = headers.get(h.RUN_ID)
    if run and run != h.LIVE_RUN:
        parts.append(f"run={run}")
    subj = subject
    if colour:
        code = COLOURS.get(subject.split(".", 1)[0], 37 if not subject.startswith("dlq") else 91)
        subj = f"\x1b[{code}m{subject}\x1b[0m"
    return f"{ts:<20} {subj}  " + " ".join(parts)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def matches_symbol(subject: str, symbol: str | None) -> bool:
    return symbol is None or subject.endswith("." + symbol)


def deliver_config(since: datetime | None, seq: int | None, last: bool) -> ConsumerConfig:
    if seq is not None:
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq)
    if since is not None:
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat())
    if last:
        return ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)


async def tail(
    settings: CommonSettings,
    subject: str,
    *,
    symbol: str | None = None,
    since: datetime | None = None,
    seq: int | None = None,
    last: bool = False,
    as_json: bool = False,
    count: int | None = None,
    idle_timeout: float | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Print messages until ``count`` were shown or nothing arrived for ``idle_timeout`` seconds."""
    nc = await connect(settings, "coinpilot-tail")
    shown = 0
    try:
        js = nc.jetstream()
        stream = stream_for_subject(subject).name
        sub = await js.subscribe(
            subject, stream=stream, ordered_consumer=True, config=deliver_config(since, seq, last)
        )
        colour = sys.stdout.isatty() and not as_json
        while count is None or shown < count:
            try:
                msg = await asyncio.wait_for(sub.next_msg(timeout=None), timeout=idle_timeout)
            except TimeoutError:
                break
            if not matches_symbol(msg.subject, symbol):
                continue
            headers = h.of_message(msg.headers)
            if as_json:
                out(json.dumps({"subject": msg.subject, "headers": headers, "data": json.loads(msg.data)}))
            else:
                out(summarize(msg.subject, msg.data, headers, colour=colour))
            shown += 1
        await sub.unsubscribe()
    finally:
        await nc.close()
    return shown
