"""JetStream streams, declared once in code and provisioned idempotently.

One stream per noun (STYLE 2.5). Every stream keeps a duplicate window so a re-publish with the
same ``Nats-Msg-Id`` is stored once; that is what makes at-least-once publishing safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_seconds: float
    duplicate_window_seconds: float = 2 * 3600.0
    storage: StorageType = StorageType.FILE

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=self.storage,
            max_age=self.max_age_seconds,
            duplicate_window=self.duplicate_window_seconds,
        )


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("CANDLES", ("candles.>",), max_age_seconds=14 * DAY_SECONDS),
    StreamSpec("INDICATORS", ("indicators.>", "regime.>"), max_age_seconds=3 * DAY_SECONDS),
    StreamSpec("SIGNALS", ("signals.>",), max_age_seconds=30 * DAY_SECONDS),
    StreamSpec("ORDERS", ("orders.>",), max_age_seconds=90 * DAY_SECONDS),
    StreamSpec("FILLS", ("fills.>",), max_age_seconds=365 * DAY_SECONDS),
    StreamSpec("AI", ("ai.>",), max_age_seconds=90 * DAY_SECONDS),
    StreamSpec("RISK", ("risk.>",), max_age_seconds=90 * DAY_SECONDS),
    StreamSpec("REPORTS", ("reports.>",), max_age_seconds=365 * DAY_SECONDS),
    StreamSpec("DLQ", ("dlq.>",), max_age_seconds=30 * DAY_SECONDS),
)


def stream_for_subject(subject: str) -> StreamSpec:
    """The stream that captures a concrete subject or a subscription pattern."""
    head = subject.split(".", 1)[0]
    for spec in STREAMS:
        if any(s.split(".", 1)[0] == head for s in spec.subjects):
            return spec
    raise KeyError(f"no stream captures {subject!r}")


async def ensure_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...] = STREAMS) -> list[str]:
    """Create missing streams and bring existing ones to the declared config; returns what changed."""
    changed: list[str] = []
    for spec in specs:
        wanted = spec.config()
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(wanted)
            changed.append(f"created {spec.name}")
            continue
        have = info.config
        if (
            sorted(have.subjects or []) != sorted(wanted.subjects or [])
            or have.max_age != wanted.max_age
            or have.duplicate_window != wanted.duplicate_window
        ):
            await js.update_stream(wanted)
            changed.append(f"updated {spec.name}")
    return changed
