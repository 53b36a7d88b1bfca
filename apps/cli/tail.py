"""``coinpilot tail``: follow subjects through JetStream and print each message readably."""

from __future__ import annotations

import asyncio
import base64
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


def decode_body(body: bytes) -> tuple[Any, str | None]:
    """The body as JSON, or ``(None, why)`` when it is not UTF-8 or not JSON (a poisoned message)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        return json.loads(text), None
    except ValueError:
        return None, "not JSON"


def as_json_line(subject: str, body: bytes, headers: dict[str, str], seq: int | None = None) -> str:
    """One JSON line per message; an undecodable body goes out as base64 with the reason.

    The messages ``tail`` is most often asked about are the ones no service could read, so they
    must print like any other, never stop the command.
    """
    data, problem = decode_body(body)
    line: dict[str, Any] = {"subject": subject, "headers": headers}
    if seq is not None:
        line["seq"] = seq
    if problem is None:
        line["data"] = data
    else:
        line["undecodable"] = problem
        line["data_base64"] = base64.b64encode(body).decode("ascii")
    return json.dumps(line, ensure_ascii=False)


def summarize(subject: str, body: bytes, headers: dict[str, str], *, colour: bool = False) -> str:
    """One line: event time, subject, then the key fields present in the message."""
    decoded, problem = decode_body(body)
    data: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
    if "candle" in data and isinstance(data["candle"], dict):
        data = {**data, "close": data["candle"].get("close")}
    ts = str(data.get("ts_event", headers.get(h.EVENT_TIME, "?")))[:19].replace("T", " ")
    if isinstance(decoded, dict):
        parts = [f"{k}={_short(data[k])}" for k in KEY_FIELDS if data.get(k) not in (None, "", [], {})]
    else:
        parts = [_undecodable(body, problem or "not a JSON object")]
    run = headers.get(h.RUN_ID)
    if run and run != h.LIVE_RUN:
        parts.append(f"run={run}")
    subj = subject
    if colour:
        code = COLOURS.get(subject.split(".", 1)[0], 37 if not subject.startswith("dlq") else 91)
        subj = f"\x1b[{code}m{subject}\x1b[0m"
    return f"{ts:<20} {subj}  " + " ".join(parts)


def _undecodable(body: bytes, problem: str) -> str:
    """What a body that is not a JSON object holds: its text when it has one, else base64."""
    try:
        preview = "text=" + _short(repr(body.decode("utf-8")))
    except UnicodeDecodeError:
        preview = "base64=" + _short(base64.b64encode(body).decode("ascii"))
    return f"<{len(body)} bytes, {problem}> {preview}"


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


def _sequence(msg: Any) -> int | None:
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # not a JetStream delivery
        return None


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
                out(as_json_line(msg.subject, msg.data, headers, _sequence(msg)))
            else:
                out(summarize(msg.subject, msg.data, headers, colour=colour))
            shown += 1
        await sub.unsubscribe()
    finally:
        await nc.close()
    return shown
