"""Who may do what on the bus: one NATS identity per service, pure data and the config made from it.

The manifest below is the one source of truth for NATS permissions: for every identity, the
durable consumers it reads (subject pattern + durable name) and the subjects it publishes. From it
come the server's authorization block (``coinpilot nats permissions``; ``infra/nats/auth.conf``,
the Helm chart's bundled NATS, ``make run`` and the test servers all use it), the client-side
publish guard of :class:`coinpilot.bus.Bus` and the start-up check of a service's identity.
``tests/unit/bus/test_permissions.py`` checks it against the services' real definitions.

Streams are created and updated by the operator only (``coinpilot nats setup``, the compose
``migrate`` job, the chart's hook Job): a service may read a stream's config (its start-up check
that the streams are as declared) but never change it, since a stream update (a shorter
``max_age``, other subjects) could throw away or capture what other services depend on. A service
creates and reads only its own durables, and only with their declared filter subject.

Importable without the runtime: the CLI prints configs without loading FastStream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from coinpilot.bus.partitions import MAX_PARTITIONS
from coinpilot.bus.streams import STREAMS, stream_for_subject
from coinpilot.errors import ConfigError

INBOX = "_INBOX.>"  # replies: publish acks, JetStream API answers, pull deliveries
OPERATOR = "operator"  # the CLI's identity (nats setup, tail, trace, dlq redrive): everything
REPLAY = "replay"
ALERTS = "risk.alerts"


class PublishNotAllowed(ConfigError):
    """Raised by a service's bus when it is asked to publish a subject outside its allow-list."""


class IdentityError(ConfigError):
    """Raised at start-up when the NATS server refuses something a service needs."""


@dataclass(frozen=True, slots=True)
class Consumes:
    """One durable pull consumer: its filter subject and its durable name."""

    subject: str
    durable: str

    @property
    def stream(self) -> str:
        return stream_for_subject(self.subject).name


@dataclass(frozen=True, slots=True)
class Identity:
    """A NATS user: what it consumes, what it publishes and which extra reads it needs."""

    name: str
    consumes: tuple[Consumes, ...] = ()
    publishes: tuple[str, ...] = ()
    reads_pipeline: bool = False  # lockstep drain checks: list streams and every stream's consumers
    partitioned: bool = False  # may run partitioned: per-partition durables and its lease bucket
    standby: bool = False  # may run hot standbys: its lease bucket, resetting its own durables
    admin: bool = False  # no restriction (the operator's CLI)


def _service(
    name: str,
    consumes: Iterable[tuple[str, str]],
    publishes: Iterable[str],
    *,
    partitioned: bool = False,
    standby: bool = False,
) -> Identity:
    """A service publishes its outputs, its dead letters and (for refused input) risk alerts."""
    return Identity(
        name,
        tuple(Consumes(s, d) for s, d in consumes),
        (*publishes, f"dlq.{name}"),
        partitioned=partitioned,
        standby=standby,
    )


MANIFEST: tuple[Identity, ...] = (
    _service(
        "collector", [("candles.1m.*", "collector-recorder")], ["candles.1m.*", ALERTS], partitioned=True
    ),
    _service(
        "indicator",
        [("candles.1m.*", "indicator-candles")],
        ["indicators.1m.*", "candles.1h.*", "regime.*", ALERTS],
        partitioned=True,
    ),
    _service(
        "strategy",
        [
            ("indicators.1m.*", "strategy-indicators"),
            ("fills.*", "strategy-fills"),
            ("orders.rejected.*", "strategy-rejections"),
        ],
        ["signals.entry.*", "signals.exit.*", ALERTS],
        partitioned=True,
    ),
    _service(
        "risk",
        [
            ("signals.*.*", "risk-signals"),
            ("fills.*", "risk-fills"),
            ("candles.1h.*", "risk-candles"),
            ("orders.rejected.*", "risk-rejections"),
            ("control.halt", "risk-control"),  # the kill switch; only the operator publishes it
        ],
        ["orders.proposed.*", "orders.approved.*", "orders.rejected.*", ALERTS],
        standby=True,
    ),
    _service(
        "agent",
        [("orders.proposed.*", "agent-orders"), ("candles.1h.*", "agent-candles")],
        ["orders.approved.*", "orders.rejected.*", "ai.decisions.*", ALERTS],
    ),
    _service(
        "executor",
        [("orders.approved.*", "executor-orders")],
        ["fills.*", "orders.rejected.*", ALERTS],
        standby=True,
    ),
    _service(
        "notifier",
        [
            ("fills.*", "notifier-fills"),
            ("ai.decisions.*", "notifier-ai"),
            ("risk.alerts", "notifier-risk"),
            ("reports.daily", "notifier-reports"),
            ("candles.1h.*", "notifier-clock"),
        ],
        ["reports.daily"],
    ),
    Identity(REPLAY, publishes=("candles.1m.*",), reads_pipeline=True),
    Identity(OPERATOR, admin=True),
)

IDENTITIES: dict[str, Identity] = {identity.name: identity for identity in MANIFEST}


def identity(name: str) -> Identity:
    try:
        return IDENTITIES[name]
    except KeyError:
        raise ConfigError(f"no NATS identity {name!r}; one of {', '.join(IDENTITIES)}") from None


# -- what an identity may do ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Permissions:
    """Allow-lists in NATS subject syntax; ``None`` means unrestricted."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None


def _consumer_api(c: Consumes) -> tuple[str, ...]:
    """The JetStream API of one own durable: read it, create it with its own filter, pull, ack.

    ``CONSUMER.CREATE.<stream>.<durable>.<filter>`` is what nats-py sends for a named consumer
    with a filter (server >= 2.9), and the server refuses a body whose filter differs from the
    subject's, so the grant pins the durable to its filter. The legacy ``DURABLE.CREATE`` (any
    filter) is not granted.
    """
    s, d = c.stream, c.durable
    return (
        f"$JS.API.CONSUMER.INFO.{s}.{d}",
        f"$JS.API.CONSUMER.CREATE.{s}.{d}.{c.subject}",
        f"$JS.API.CONSUMER.MSG.NEXT.{s}.{d}",
        f"$JS.ACK.{s}.{d}.>",
    )


def _lease_bucket_api(who: Identity) -> list[str]:
    """The stage's lease bucket (``bus/membership.py``): create, read, write its keys."""
    bucket = f"partitions-{who.name}"
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$KV.{bucket}.>",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _standby_api(who: Identity) -> list[str]:
    """A hot standby's lease bucket and the reset of its own durables on takeover
    (``runtime/standby.py``: deleted and recreated, with their filter, at the first unacked)."""
    return [
        *_lease_bucket_api(who),
        *(f"$JS.API.CONSUMER.DELETE.{c.stream}.{c.durable}" for c in who.consumes),
    ]


def _partition_api(who: Identity) -> list[str]:
    """A partitioned service's partition durables (``<durable>-p<n>``, each filtered to its
    partition's symbols: created without the filter token, so not pinned to a filter; deleted
    when a new owner resets one to its ack floor) and its lease bucket (``bus/membership.py``)."""
    api = _lease_bucket_api(who)
    for c in who.consumes:
        for p in range(MAX_PARTITIONS):
            s, d = c.stream, f"{c.durable}-p{p}"
            api += [
                f"$JS.API.CONSUMER.INFO.{s}.{d}",
                f"$JS.API.CONSUMER.CREATE.{s}.{d}",
                f"$JS.API.CONSUMER.DELETE.{s}.{d}",
                f"$JS.API.CONSUMER.MSG.NEXT.{s}.{d}",
                f"$JS.ACK.{s}.{d}.>",
            ]
    return api


def permissions(name: str) -> Permissions:
    """What identity ``name`` may publish and subscribe, JetStream API subjects included."""
    who = identity(name)
    if who.admin:
        return Permissions(None, None)
    api: list[str] = [f"$JS.API.STREAM.INFO.{spec.name}" for spec in STREAMS]
    if who.reads_pipeline:
        api.append("$JS.API.STREAM.LIST")
        api.extend(f"$JS.API.CONSUMER.LIST.{spec.name}" for spec in STREAMS)
        api.extend(f"$JS.API.CONSUMER.INFO.{spec.name}.*" for spec in STREAMS)
    for consumer in who.consumes:
        api.extend(_consumer_api(consumer))
    if who.partitioned:
        api.extend(_partition_api(who))
    if who.standby:
        api.extend(_standby_api(who))
    return Permissions(tuple(dict.fromkeys((*who.publishes, *api))), (INBOX,))


def publish_patterns(name: str) -> tuple[str, ...] | None:
    """Stream subjects identity ``name`` publishes (no JetStream API); ``None`` if unknown or admin.

    What a :class:`Bus` enforces: a name outside the manifest (a test's or a plug-in's bus) is
    unrestricted here; the server still applies whatever identity its connection has.
    """
    who = IDENTITIES.get(name)
    return None if who is None or who.admin else who.publishes


# -- subject matching -------------------------------------------------------------------------
def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: ``*`` is one token, a final ``>`` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


class PublishGuard:
    """Answers "may this identity publish that subject?", memoised per concrete subject."""

    def __init__(self, name: str, patterns: Iterable[str]) -> None:
        self.name = name
        self.patterns = tuple(patterns)
        self._seen: dict[str, bool] = {}

    def check(self, subject: str) -> None:
        allowed = self._seen.get(subject)
        if allowed is None:
            allowed = self._seen[subject] = any(subject_matches(p, subject) for p in self.patterns)
        if not allowed:
            raise PublishNotAllowed(
                f"{self.name} may not publish {subject!r}: its allow-list is {', '.join(self.patterns)} "
                "(libs/coinpilot/bus/permissions.py)"
            )


@cache
def guard_for(name: str) -> PublishGuard | None:
    patterns = publish_patterns(name)
    return None if patterns is None else PublishGuard(name, patterns)


def probe_subject(pattern: str) -> str:
    """A concrete subject a pattern allows, for a start-up permission probe."""
    return ".".join("_probe" if token in ("*", ">") else token for token in pattern.split("."))


# -- the server's configuration ---------------------------------------------------------------
def password_env(name: str) -> str:
    """The environment variable nats-server reads identity ``name``'s password from."""
    return f"NATS_PASSWORD_{name.upper()}"


def authorization_conf(
    passwords: Mapping[str, str] | None = None,
    *,
    names: Iterable[str] | None = None,
) -> str:
    """The ``authorization { users: [...] }`` block for nats-server, one user per identity.

    ``passwords`` given: literal passwords (``make run``, tests: the file stays private).
    Otherwise each password is the environment variable :func:`password_env` (compose, Helm).
    """
    lines = [
        "# Generated from libs/coinpilot/bus/permissions.py by `coinpilot nats permissions`: do not edit.",
        "authorization {",
        "  users: [",
    ]
    for name in names or IDENTITIES:
        perms = permissions(name)
        secret = json.dumps(passwords[name]) if passwords is not None else "$" + password_env(name)
        lines += ["    {", f"      user: {json.dumps(name)}", f"      password: {secret}"]
        if perms.publish is not None and perms.subscribe is not None:
            lines += [
                "      permissions: {",
                *_allow("publish", perms.publish),
                *_allow("subscribe", perms.subscribe),
                "      }",
            ]
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _allow(kind: str, subjects: Iterable[str]) -> list[str]:
    return [f"        {kind}: {{ allow: [", *(f"          {json.dumps(s)}" for s in subjects), "        ] }"]


# Files committed to the repository that hold the generated authorization (passwords from the
# environment); ``coinpilot nats permissions --check`` and a unit test fail when they drift.
GENERATED_FILES: tuple[str, ...] = ("infra/nats/auth.conf", "helm/coinpilot/files/nats-auth.conf")


def generated_files() -> dict[str, str]:
    """Repository path -> the text it must hold."""
    text = authorization_conf()
    return dict.fromkeys(GENERATED_FILES, text)
