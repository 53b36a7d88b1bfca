"""NATS connection options from settings: user/password, token, credentials file, TLS.

Also where a connection's permission violations become visible (:class:`PermissionWatch`) and
where a service checks at start-up that its identity may do what it needs (:func:`check_identity`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import Any

import nats
from nats.aio.client import Client
from prometheus_client import Counter

from coinpilot.bus.permissions import IdentityError, permissions, probe_subject
from coinpilot.settings import CommonSettings

log = logging.getLogger("coinpilot.bus")

PERMISSIONS_VIOLATION = "permissions violation"
# A probe publish carries an expectation no stream meets, so JetStream refuses to store it.
EXPECTED_STREAM = "Nats-Expected-Stream"
PROBE_STREAM = "coinpilot-permission-probe"

NATS_PERMISSION_VIOLATIONS = Counter(
    "coinpilot_nats_permission_violations",
    "Publishes or subscriptions the NATS server refused this client (its identity lacks them)",
    ["service"],
)


class PermissionWatch:
    """The server's permission violations on one connection, logged at ERROR and counted.

    nats-server answers a refused publish or subscribe with ``-ERR 'Permissions Violation ...'``
    and keeps the connection, so without this a refused publish is a silent timeout.
    """

    def __init__(self, who: str) -> None:
        self.who = who
        self.violations: list[str] = []

    async def on_error(self, exc: Exception) -> None:
        text = str(exc)
        if PERMISSIONS_VIOLATION in text.lower():
            self.violations.append(text.removeprefix("nats: "))
            NATS_PERMISSION_VIOLATIONS.labels(self.who).inc()
            log.error("NATS refused %s: %s", self.who, text)
        else:
            log.warning("NATS error on %s: %s: %s", self.who, type(exc).__name__, text)


def tls_context(settings: CommonSettings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None)
    if settings.nats_tls_cert and settings.nats_tls_key:
        ctx.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    return ctx


def connect_options(
    settings: CommonSettings, name: str, watch: PermissionWatch | None = None
) -> dict[str, Any]:
    """Options for ``nats.connect``; the same ones are handed to FastStream's broker.

    ``COINPILOT_NATS_URL`` may list a cluster's nodes, comma-separated; the client also learns the
    other nodes from the server it reaches. When that node dies the client reconnects to another
    one (a second apart, for ever) and resubscribes; what was in flight fails as a transient
    error and is retried with the same ``Nats-Msg-Id`` (``tests/e2e/test_nats_cluster.py``).
    """
    opts: dict[str, Any] = {
        "servers": [s.strip() for s in settings.nats_url.split(",")],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "connect_timeout": 5,
        "error_cb": (watch or PermissionWatch(name.removeprefix("coinpilot-"))).on_error,
    }
    if settings.nats_user:
        opts["user"] = settings.nats_user
        opts["password"] = settings.nats_password.get_secret_value() if settings.nats_password else ""
    if settings.nats_token:
        opts["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds_file:
        opts["user_credentials"] = str(settings.nats_creds_file)
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts


async def connect(settings: CommonSettings, name: str = "coinpilot-cli", *, attempts: int = -1) -> Client:
    """A client of ``settings``' NATS. ``attempts``: how many times to try the servers before giving
    up (-1, the services' default, never gives up; a one-shot command gives up and says so)."""
    return await nats.connect(**{**connect_options(settings, name), "max_reconnect_attempts": attempts})


async def settle(nc: Client, timeout: float = 5.0) -> None:
    """Return once the server has answered everything published so far (its refusals included).

    Twice: nats-py 2.16 writes a flush's PING straight to the socket, ahead of publishes still in
    its pending buffer, so the first PONG may come before the server saw them; the second PING is
    written after them (the flusher task ran while the first round trip was awaited).
    """
    await nc.flush(timeout)
    await nc.flush(timeout)


def destructive(subject: str) -> bool:
    """A JetStream API call the server carries out even without a reply subject: never probed
    (``$JS.API.CONSUMER.DELETE.<stream>.<durable>`` deletes the durable, a partition's that
    another replica reads: ``coinpilot.runtime.partitioned``)."""
    return subject.startswith("$JS.API.") and ".DELETE." in subject


async def check_identity(
    nc: Client, watch: PermissionWatch, names: Iterable[str], *, user: str | None, timeout: float = 5.0
) -> None:
    """Fail now, with what is missing, if the server refuses anything services ``names`` need.

    Probes every subject of their allow-lists but the :func:`destructive` ones, without an
    effect: stream subjects carry an
    expected stream no stream has (JetStream stores nothing), API subjects and acks go without a
    reply subject or with too few tokens (the server ignores them); then one inbox subscription.
    The server answers a refusal before the flush's PONG.
    """
    subjects: set[str] = set()
    for name in names:
        allowed = permissions(name).publish
        subjects.update(probe_subject(p) for p in allowed or () if not destructive(p))
    before = len(watch.violations)
    for subject in sorted(subjects):
        await nc.publish(subject, b"", headers={EXPECTED_STREAM: PROBE_STREAM})
    sub = await nc.subscribe(nc.new_inbox())
    await sub.unsubscribe()
    await settle(nc, timeout)
    refused = watch.violations[before:]
    if refused:
        raise IdentityError(
            f"the NATS server refuses what {', '.join(names)} needs as user {user or '(none)'!r}: "
            + "; ".join(refused)
            + ". Give each service its own identity from `coinpilot nats permissions` "
            "(COINPILOT_NATS_USER/COINPILOT_NATS_PASSWORD) and reload the server's config."
        )
