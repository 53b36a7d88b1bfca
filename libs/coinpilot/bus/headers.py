"""Standard headers on every CoinPilot message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from coinpilot.clock import ensure_utc
from coinpilot.runs import LIVE_RUN as LIVE_RUN

MSG_ID = "Nats-Msg-Id"
RUN_ID = "Coinpilot-Run-Id"
TRACE_ID = "Coinpilot-Trace-Id"
EVENT_TIME = "Coinpilot-Event-Time"
PUBLISHED_AT = "Coinpilot-Published-At"
SCHEMA = "Coinpilot-Schema"


def qualified_msg_id(run_id: str, msg_id: str) -> str:
    """Replays of the same candles under different run ids must not dedup against each other."""
    return msg_id if run_id == LIVE_RUN else f"{run_id}:{msg_id}"


def build_headers(
    *, msg_id: str, run_id: str, trace_id: str, ts_event: datetime, published_at: datetime, schema: str
) -> dict[str, str]:
    return {
        MSG_ID: qualified_msg_id(run_id, msg_id),
        RUN_ID: run_id,
        TRACE_ID: trace_id,
        EVENT_TIME: ensure_utc(ts_event).isoformat(),
        PUBLISHED_AT: ensure_utc(published_at).isoformat(),
        SCHEMA: schema,
    }


def of_message(raw: Mapping[str, object] | None) -> dict[str, str]:
    """A delivered message's headers as ``name -> str``, whichever parser nats-py used.

    nats-py's own parser gives one ``str`` per name. With the optional ``fast-mail-parser``
    installed (the ``nats-py[fast_parse]`` extra; 0.10 and later) it gives a *list* per name, and
    every reader of a run id, a trace id or a timestamp would then fail on every message. A list
    becomes its last value, the one nats-py's own parser keeps for a repeated name.
    """
    if not raw:
        return {}
    return {name: value if type(value) is str else _one(value) for name, value in raw.items()}


def _one(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Sequence) and not isinstance(value, str):
        return _one(value[-1]) if value else ""
    return str(value)


def published_at(headers: Mapping[str, str]) -> datetime | None:
    raw = headers.get(PUBLISHED_AT)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        return None
