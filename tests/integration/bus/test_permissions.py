"""The generated NATS permissions on a real nats-server: each identity can do what it needs and the
server refuses everything else; a service on the wrong identity fails at start-up, saying why."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import SecretStr

from apps.host import ServiceHost
from coinpilot.bus import ensure_streams
from coinpilot.bus.connect import (
    NATS_PERMISSION_VIOLATIONS,
    PermissionWatch,
    check_identity,
    destructive,
    settle,
)
from coinpilot.bus.permissions import (
    IDENTITIES,
    OPERATOR,
    REPLAY,
    IdentityError,
    permissions,
    probe_subject,
    subject_matches,
)
from coinpilot.embedded import EmbeddedStack
from coinpilot.service_names import SERVICES
from coinpilot.settings import CommonSettings
from tests.support.servers import NatsProcess

RESTRICTED = [name for name in IDENTITIES if name != OPERATOR]
# Subjects that move money or feed the pipeline, and JetStream calls that change it.
SENSITIVE = (
    "orders.approved.KRW-BTC",
    "orders.proposed.KRW-BTC",
    "fills.KRW-BTC",
    "candles.1m.KRW-BTC",
    "signals.entry.KRW-BTC",
    "indicators.1m.KRW-BTC",
    "reports.daily",
    "control.halt",
    "dlq.executor",
    "_INBOX.forged",
    "$JS.API.STREAM.CREATE.FORGED",
    "$JS.API.STREAM.UPDATE.FILLS",
    "$JS.API.STREAM.DELETE.FILLS",
    "$JS.API.STREAM.PURGE.ORDERS",
    "$JS.API.CONSUMER.DELETE.ORDERS.executor-orders",
    "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.forged",
    "$JS.API.CONSUMER.MSG.NEXT.ORDERS.executor-orders",
    "$JS.ACK.ORDERS.executor-orders.1.1.1.1.0",
)


def owns(name: str, subject: str) -> bool:
    return any(subject_matches(p, subject) for p in permissions(name).publish or ())


async def connect_as(server: NatsProcess, name: str, watch: PermissionWatch) -> Client:
    return await nats.connect(server.url, user=name, password=server.passwords[name], error_cb=watch.on_error)


async def refused(nc: Client, watch: PermissionWatch, subjects: list[str]) -> set[str]:
    """The subjects the server refused, publishing each without effect (see ``check_identity``)."""
    before = len(watch.violations)
    for subject in subjects:
        await nc.publish(subject, b"", headers={"Nats-Expected-Stream": "coinpilot-permission-probe"})
    await settle(nc)
    text = " ".join(watch.violations[before:])
    return {s for s in subjects if f'"{s.lower()}"' in text}


@pytest.fixture
async def operator(nats_server: NatsProcess) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)  # no credentials: the operator (no_auth_user)
    await ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


@pytest.mark.parametrize("name", RESTRICTED)
async def test_an_identity_may_publish_its_list_and_nothing_sensitive_outside_it(
    name: str, nats_server: NatsProcess, operator: Client
) -> None:
    watch = PermissionWatch(f"test-{name}")
    nc = await connect_as(nats_server, name, watch)
    try:
        await check_identity(nc, watch, [name], user=name)  # everything it needs, probed
        forbidden = [s for s in SENSITIVE if not owns(name, s)]
        assert forbidden, "every identity has sensitive subjects it does not own"
        assert await refused(nc, watch, forbidden) == set(forbidden)
        own = [probe_subject(p) for p in permissions(name).publish or () if not destructive(p)]
        assert await refused(nc, watch, own) == set()
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        (n, s)
        for n in ("strategy", "collector", REPLAY)
        for s in ("orders.approved.KRW-PERM", "fills.KRW-PERM")
    ],
)
async def test_a_forged_order_or_fill_is_refused_by_the_server_and_never_stored(
    name: str, subject: str, nats_server: NatsProcess, operator: Client
) -> None:
    js = operator.jetstream()
    stream = "ORDERS" if subject.startswith("orders") else "FILLS"
    before = (await js.stream_info(stream)).state.last_seq
    watch = PermissionWatch(f"test-{name}")
    nc = await connect_as(nats_server, name, watch)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream().publish(subject, b"{}", timeout=1)
    finally:
        await nc.close()
    assert f'permissions violation for publish to "{subject.lower()}"' in " ".join(watch.violations)
    assert (await js.stream_info(stream)).state.last_seq == before


async def test_a_refusal_is_logged_at_error_and_counted(
    nats_server: NatsProcess, operator: Client, caplog: pytest.LogCaptureFixture
) -> None:
    watch = PermissionWatch("test-counted")
    nc = await connect_as(nats_server, "collector", watch)
    try:
        with caplog.at_level(logging.ERROR, logger="coinpilot.bus"):
            assert await refused(nc, watch, ["fills.KRW-COUNT"]) == {"fills.KRW-COUNT"}
    finally:
        await nc.close()
    assert NATS_PERMISSION_VIOLATIONS.labels("test-counted")._value.get() == 1
    assert "NATS refused test-counted" in caplog.text and "fills.krw-count" in caplog.text


async def test_the_start_up_probe_has_no_effect_on_streams_or_consumers() -> None:
    """The probe of the executor's pull subject carries no reply subject: the server delivers
    nothing, so the pending order stays pending and nothing awaits an ack. (A server of its own:
    the executor's durable with a junk order must not meet other tests' executors.)"""
    server = NatsProcess()
    server.start()
    operator = await nats.connect(server.url)
    watch = PermissionWatch("test-probe")
    nc = await connect_as(server, "executor", watch)
    try:
        js = operator.jetstream()
        await ensure_streams(js)
        await js.publish("orders.approved.KRW-PROBE", b"{}")
        last = {s.config.name: s.state.last_seq for s in await js.streams_info()}
        await nc.jetstream().add_consumer(
            "ORDERS",
            ConsumerConfig(
                name="executor-orders",
                durable_name="executor-orders",
                filter_subject="orders.approved.*",
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        await check_identity(nc, watch, ["executor"], user="executor")
        info = await js.consumer_info("ORDERS", "executor-orders")
        after = {s.config.name: s.state.last_seq for s in await js.streams_info()}
    finally:
        await nc.close()
        await operator.close()
        server.close()
    assert info.num_pending == 1 and info.num_ack_pending == 0 and info.delivered.consumer_seq == 0
    assert after == last and watch.violations == []


def service_settings(server: NatsProcess, user: str) -> CommonSettings:
    return CommonSettings(
        nats_url=server.url,
        nats_user=user,
        nats_password=SecretStr(server.passwords[user]),
        database_url=None,
    )


async def test_a_service_started_with_another_identity_fails_at_start_up_saying_what_is_missing(
    nats_server: NatsProcess, operator: Client
) -> None:
    host = ServiceHost(["strategy"], service_settings(nats_server, "collector"), serve_http=False)
    with pytest.raises(IdentityError) as refused_start:
        await host.start()
    message = str(refused_start.value)
    assert "strategy" in message and "'collector'" in message
    assert 'publish to "signals.entry._probe"' in message
    assert "coinpilot nats permissions" in message


async def test_a_service_on_its_own_identity_refuses_to_create_streams_and_says_who_may() -> None:
    """Streams are the operator's: on a server where nobody ran ``nats setup`` a service stops."""
    server = NatsProcess()
    server.start()
    try:
        host = ServiceHost(["executor"], service_settings(server, "executor"), serve_http=False)
        with pytest.raises(IdentityError, match="run `coinpilot nats setup` as the operator"):
            await host.start()
    finally:
        server.close()


@pytest.mark.parametrize("name", SERVICES)
async def test_every_service_passes_the_start_up_check_on_its_own_identity(
    name: str, nats_server: NatsProcess, operator: Client
) -> None:
    watch = PermissionWatch(f"test-own-{name}")
    nc = await connect_as(nats_server, name, watch)
    try:
        await check_identity(nc, watch, [name], user=name)
        await ensure_streams(nc.jetstream())  # reads only: the streams are as declared
    finally:
        await nc.close()
    assert watch.violations == []


def test_a_stack_on_a_test_server_hands_each_service_its_own_identity(
    nats_server: NatsProcess, tmp_path: Path
) -> None:
    """What the e2e tests rely on: ``start_service`` gives each process this environment."""
    stack = EmbeddedStack(tmp_path, nats_url=nats_server.url, database_url="unused", redis_url="unused")
    assert stack.nats_env("executor") == {
        "COINPILOT_NATS_USER": "executor",
        "COINPILOT_NATS_PASSWORD": nats_server.passwords["executor"],
    }
    assert nats_server.passwords["executor"] not in repr(stack)
    assert stack.nats_credentials("operator") == {
        "user": "operator",
        "password": nats_server.passwords["operator"],
    }
    assert EmbeddedStack(tmp_path, nats_url="nats://elsewhere:4222").nats_env("executor") == {}


async def test_every_refusal_is_in_by_the_time_the_check_settles(
    nats_server: NatsProcess, operator: Client
) -> None:
    """One flush right after publishing missed refusals in about a third of fresh connections (its
    PING overtakes nats-py's pending buffer); ``settle`` waits for all of them."""
    for attempt in range(8):
        watch = PermissionWatch("test-settle")
        nc = await connect_as(nats_server, "collector", watch)
        try:
            subjects = [f"fills.KRW-S{attempt}x{i}" for i in range(16)]
            assert await refused(nc, watch, subjects) == set(subjects)
        finally:
            await nc.close()


async def test_the_start_up_probe_leaves_the_partition_durables_of_other_replicas_alone(
    nats_server: NatsProcess, operator: Client
) -> None:
    """A replica starting checks its identity while the others read their partition durables;
    probing ``CONSUMER.DELETE`` (which the server carries out without a reply) would delete them."""
    from nats.js.api import AckPolicy, ConsumerConfig

    from coinpilot.runtime.partitioned import reset_consumer

    base = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_deliver=-1)
    symbol = "KRW-PROBE"
    await reset_consumer(
        operator.jetstream(),
        base,
        "CANDLES",
        "indicator-candles-p3",
        [f"candles.1m.{symbol}"],
        "indicator-candles",
    )
    watch = PermissionWatch("test-indicator-start")
    nc = await connect_as(nats_server, "indicator", watch)
    try:
        await check_identity(nc, watch, ["indicator"], user="indicator")
        await settle(nc)
        info = await operator.jetstream().consumer_info("CANDLES", "indicator-candles-p3")
        assert info.config.filter_subjects == [f"candles.1m.{symbol}"]
        assert any(destructive(p) for p in permissions("indicator").publish or ())
    finally:
        await nc.close()
        await operator.jetstream().delete_consumer("CANDLES", "indicator-candles-p3")
