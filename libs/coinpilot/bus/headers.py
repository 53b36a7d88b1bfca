"""Standard headers on every CoinPilot message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from coinpilot.clock import ensure_utc

MSG_ID = "Nats-Msg-Id"
RUN_ID = "Coinpilot-Run-Id"
TRACE_ID = "Coinpilot-Trace-Id"
EVENT_TIME = "Coinpilot-Event-Time"
PUBLISHED_AT = "Coinpilot-Published-At"
SCHEMA = "Coinpilot-Schema"

LIVE_RUN = "live"


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


def published_at(headers: Mapping[str, str]) -> datetime | None:
    raw = headers.get(PUBLISHED_AT)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None
