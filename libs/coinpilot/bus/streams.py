"""JetStream streams, declared once in code and provisioned idempotently.

One stream per noun (STYLE 2.5). Every stream keeps a duplicate window so a re-publish with the
same ``Nats-Msg-Id`` is stored once; that is what makes at-least-once publishing safe.

Every stream has the same number of replicas, ``COINPILOT_STREAM_REPLICAS``: 1 on a single
server, 3 on a JetStream cluster of three or more nodes (survives the loss of one); unset, the
streams keep what they have (1 for new ones). Consumers inherit it. A value the server cannot
place (more than 1 on a single server, more than the cluster's nodes) is refused with
:class:`StreamReplicasError`, not left as fewer copies.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from coinpilot.errors import ConfigError

DAY_SECONDS = 86_400
MAX_REPLICAS = 5  # JetStream's limit for a stream
# the server's answers to replicas it cannot place
NOT_CLUSTERED = 10074  # "replicas > 1 not supported in non-clustered mode"
NO_PLACEMENT = 10005  # "no suitable peers for placement"
INSUFFICIENT_RESOURCES = 10023


class StreamReplicasError(ConfigError):
    """Raised when the NATS server cannot hold the streams with the configured replicas."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_seconds: float
    duplicate_window_seconds: float = 2 * 3600.0
    storage: StorageType = StorageType.FILE

    def config(self, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=self.storage,
            max_age=self.max_age_seconds,
            duplicate_window=self.duplicate_window_seconds,
            num_replicas=replicas,
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
    StreamSpec("CONTROL", ("control.>",), max_age_seconds=30 * DAY_SECONDS),
)


def stream_for_subject(subject: str) -> StreamSpec:
    """The stream that captures a concrete subject or a subscription pattern."""
    head = subject.split(".", 1)[0]
    for spec in STREAMS:
        if any(s.split(".", 1)[0] == head for s in spec.subjects):
            return spec
    raise KeyError(f"no stream captures {subject!r}")


def configured_replicas() -> int | None:
    """``COINPILOT_STREAM_REPLICAS`` as the settings read it; None when it is not set."""
    from coinpilot.settings import CommonSettings

    return CommonSettings().stream_replicas


def _differs(have: StreamConfig, wanted: StreamConfig) -> bool:
    return (
        sorted(have.subjects or []) != sorted(wanted.subjects or [])
        or have.max_age != wanted.max_age
        or have.duplicate_window != wanted.duplicate_window
        or (have.num_replicas or 1) != wanted.num_replicas
    )


def _refusal(name: str, replicas: int, exc: APIError) -> StreamReplicasError | None:
    """The clear error for a server that cannot place ``replicas`` copies; None for other errors."""
    if exc.err_code not in (NOT_CLUSTERED, NO_PLACEMENT, INSUFFICIENT_RESOURCES):
        return None
    return StreamReplicasError(
        f"NATS cannot hold stream {name} with {replicas} replicas ({exc.description}): "
        f"{replicas} replicas need a JetStream cluster of at least {replicas} nodes. Set "
        "COINPILOT_STREAM_REPLICAS to at most the cluster's size (1 for a single server)."
    )


async def ensure_streams(
    js: JetStreamContext, specs: tuple[StreamSpec, ...] = STREAMS, *, replicas: int | None = None
) -> list[str]:
    """Create missing streams and bring existing ones to the declared config; returns what changed.

    ``replicas``: copies of every stream; None takes ``COINPILOT_STREAM_REPLICAS``. With neither,
    existing streams keep the replicas they have (new ones get 1): a command run without the
    setting (a replay from a laptop) never scales a replicated stream down.
    """
    if replicas is None:
        replicas = configured_replicas()
    if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
        raise StreamReplicasError(f"stream replicas must be 1..{MAX_REPLICAS}, not {replicas}")
    changed: list[str] = []
    for spec in specs:
        copies = replicas or 1
        try:
            try:
                info = await js.stream_info(spec.name)
            except NotFoundError:
                await js.add_stream(spec.config(copies))
                changed.append(f"created {spec.name}")
                continue
            copies = replicas or info.config.num_replicas or 1
            wanted = spec.config(copies)
            if _differs(info.config, wanted):
                await js.update_stream(wanted)
                changed.append(f"updated {spec.name}")
        except APIError as exc:
            refusal = _refusal(spec.name, copies, exc)
            if refusal is None:
                raise
            raise refusal from exc
    return changed
