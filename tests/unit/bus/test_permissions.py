"""The NATS permission manifest: true to the services, least privilege, and its config generated."""

from __future__ import annotations

import importlib
import logging
import re
import stat
from pathlib import Path

import pytest

from coinpilot.bus import Bus
from coinpilot.bus.permissions import (
    GENERATED_FILES,
    IDENTITIES,
    INBOX,
    OPERATOR,
    REPLAY,
    Consumes,
    PublishNotAllowed,
    authorization_conf,
    generated_files,
    password_env,
    permissions,
    probe_subject,
    publish_patterns,
    subject_matches,
)
from coinpilot.db import Database
from coinpilot.embedded import write_nats_auth
from coinpilot.runtime import Runtime
from coinpilot.service_names import SERVICES
from coinpilot.settings import CommonSettings


def definition(service: str):  # type: ignore[no-untyped-def]
    """The service's real definition; ``build`` only wires, it connects nothing."""
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:1/unused")
    rt = Runtime(service, CommonSettings(), Bus(None, service), db, None, logging.getLogger("test"))  # type: ignore[arg-type]
    return importlib.import_module(f"services.{service}.app").build(rt)


def allows(name: str, subject: str) -> bool:
    allowed = permissions(name).publish
    return allowed is None or any(subject_matches(p, subject) for p in allowed)


@pytest.mark.parametrize("service", SERVICES)
def test_the_manifest_lists_exactly_the_consumers_the_service_builds(service: str) -> None:
    built = {Consumes(c.subject, c.durable) for c in definition(service).consumers}
    assert set(IDENTITIES[service].consumes) == built


def test_every_identity_is_a_service_the_replay_or_the_operator() -> None:
    assert set(IDENTITIES) == {*SERVICES, REPLAY, OPERATOR}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_publish_its_dead_letters_and_consume_its_own_durables_only(service: str) -> None:
    perms = permissions(service)
    assert perms.publish is not None and perms.subscribe == (INBOX,)
    assert allows(service, f"dlq.{service}")
    assert not allows(service, f"dlq.{'notifier' if service != 'notifier' else 'risk'}")
    own = {c.durable for c in IDENTITIES[service].consumes}
    for subject in perms.publish:
        if subject.startswith(("$JS.API.CONSUMER.", "$JS.ACK.")):
            assert any(f".{d}" in subject for d in own), subject
    assert not any("STREAM.UPDATE" in s or "STREAM.DELETE" in s for s in perms.publish)
    # a partitioned service creates its own lease bucket and deletes (resets) its own partition
    # durables only; a hot standby its lease bucket and its own durables (reset on takeover); the
    # pipeline's streams are the operator's
    who = IDENTITIES[service]
    own_bucket = f"$JS.API.STREAM.CREATE.KV_partitions-{service}"
    for subject in perms.publish:
        if "STREAM.CREATE" in subject:
            assert (who.partitioned or who.standby) and subject == own_bucket, subject
        if "CONSUMER.DELETE" in subject:
            partition = any(re.search(rf"\.{d}-p\d+$", subject) for d in own)
            shared = any(subject.endswith(f".{d}") for d in own)
            assert (who.partitioned and partition) or (who.standby and shared), subject


def test_only_risk_and_the_executor_run_hot_standbys() -> None:
    assert {name for name, who in IDENTITIES.items() if who.standby} == {"risk", "executor"}
    assert allows("executor", "$JS.API.CONSUMER.DELETE.ORDERS.executor-orders")
    assert allows("executor", "$KV.partitions-executor.l.0")
    assert not allows("executor", "$KV.partitions-risk.l.0")
    assert not allows("executor", "$JS.API.CONSUMER.DELETE.ORDERS.agent-orders")


@pytest.mark.parametrize(
    ("subject", "publishers"),
    [
        ("fills.KRW-BTC", {"executor"}),
        ("orders.approved.KRW-BTC", {"risk", "agent"}),
        ("orders.proposed.KRW-BTC", {"risk"}),
        ("candles.1m.KRW-BTC", {"collector", REPLAY}),
        ("candles.1h.KRW-BTC", {"indicator"}),
        ("signals.entry.KRW-BTC", {"strategy"}),
        ("indicators.1m.KRW-BTC", {"indicator"}),
        ("ai.decisions.KRW-BTC", {"agent"}),
        ("reports.daily", {"notifier"}),
        ("control.halt", set()),
        ("$JS.API.STREAM.CREATE.FILLS", set()),
        ("$JS.API.STREAM.DELETE.FILLS", set()),
    ],
)
def test_only_the_owner_of_a_subject_may_publish_it(subject: str, publishers: set[str]) -> None:
    restricted = [name for name in IDENTITIES if name != OPERATOR]
    assert {name for name in restricted if allows(name, subject)} == publishers
    assert allows(OPERATOR, subject)


def test_a_durable_may_be_created_only_with_its_own_filter() -> None:
    perms = permissions("executor").publish or ()
    assert "$JS.API.CONSUMER.CREATE.ORDERS.executor-orders.orders.approved.*" in perms
    assert not allows("executor", "$JS.API.CONSUMER.CREATE.ORDERS.executor-orders.orders.>")
    assert not allows("executor", "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.executor-orders")
    assert not allows("executor", "$JS.API.CONSUMER.CREATE.FILLS.executor-orders.fills.*")


def test_the_replay_may_read_every_consumer_for_its_drain_checks_but_change_none() -> None:
    assert allows(REPLAY, "$JS.API.STREAM.LIST")
    assert allows(REPLAY, "$JS.API.CONSUMER.LIST.FILLS")
    assert allows(REPLAY, "$JS.API.CONSUMER.INFO.FILLS.risk-fills")
    assert not allows(REPLAY, "$JS.API.CONSUMER.CREATE.FILLS.risk-fills.fills.*")
    assert not allows(REPLAY, "$JS.API.CONSUMER.MSG.NEXT.FILLS.risk-fills")


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("fills.*", "fills.KRW-BTC", True),
        ("fills.*", "fills.KRW-BTC.x", False),
        ("fills.*", "fills", False),
        ("signals.*.*", "signals.entry.KRW-BTC", True),
        ("$JS.ACK.S.d.>", "$JS.ACK.S.d.1.2.3", True),
        ("$JS.ACK.S.d.>", "$JS.ACK.S.d", False),
        ("risk.alerts", "risk.alerts", True),
        ("risk.alerts", "risk.alerts.x", False),
    ],
)
def test_subjects_match_as_nats_matches_them(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


def test_a_probe_subject_is_one_its_pattern_allows() -> None:
    for name in IDENTITIES:
        for pattern in permissions(name).publish or ():
            assert subject_matches(pattern, probe_subject(pattern))


async def test_a_service_bus_refuses_a_subject_outside_its_list_before_any_io() -> None:
    bus = Bus(None, "strategy")  # type: ignore[arg-type]
    with pytest.raises(PublishNotAllowed, match=r"strategy may not publish 'orders\.approved\.KRW-BTC'"):
        await bus.publish_raw("orders.approved.KRW-BTC", b"{}", {})
    assert publish_patterns("test") is None and publish_patterns(OPERATOR) is None


def test_the_config_names_every_identity_and_hides_passwords_behind_the_environment() -> None:
    conf = authorization_conf()
    for name in IDENTITIES:
        assert f'user: "{name}"' in conf
        assert f"password: ${password_env(name)}" in conf
    literal = authorization_conf({name: f"pw-{name}" for name in IDENTITIES})
    assert 'password: "pw-executor"' in literal and "$NATS_PASSWORD" not in literal


REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", GENERATED_FILES)
def test_the_committed_config_is_the_generated_one(path: str) -> None:
    """Like proto/: `coinpilot nats permissions --write` regenerates it after a manifest change."""
    assert (REPO / path).read_text() == generated_files()[path], "run `coinpilot nats permissions --write`"


def test_a_config_with_literal_passwords_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "auth.conf"
    path.write_text("old")
    path.chmod(0o644)
    write_nats_auth(path, {name: "pw" for name in IDENTITIES}, no_auth_user=OPERATOR)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith('no_auth_user: "operator"\n')
