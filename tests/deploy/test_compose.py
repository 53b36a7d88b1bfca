"""The local stack: compose file structure, the files it mounts, NATS config, scrape targets, Grafana.

There is no container engine here, so `docker compose config` cannot run. The compose file is
validated against compose-subset.schema.json: a strict subset of the Compose Specification
written for this file (the keys it uses, with the spec's types and enums; unknown keys fail). It
is not the official compose-spec.json. References (services, files, images) are checked below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from coinpilot.bus.permissions import IDENTITIES, OPERATOR, password_env
from coinpilot.runtime import SERVICES
from tests.deploy.support import INFRA, REPO, SETTINGS_ENV, coinpilot_invocations, resolve_cli
from tests.support.servers import nats_server_binary

COMPOSE = INFRA / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-subset.schema.json")
APP_IMAGE = "coinpilot:local"
INFRASTRUCTURE = {"nats", "timescaledb", "redis", "migrate", "prometheus", "grafana", "n8n", "cli"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def test_the_compose_file_matches_the_compose_schema_subset() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(compose()), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_subset_refuses_what_compose_would_refuse() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    broken = compose()
    broken["services"]["risk"]["depends_on"]["nats"]["condition"] = "service_ready"
    broken["services"]["executor"]["restart"] = "sometimes"
    broken["services"]["agent"]["commnd"] = ["run", "agent"]
    paths = {"/".join(map(str, e.path)) for e in validator.iter_errors(broken)}
    assert {"services/risk/depends_on", "services/executor/restart", "services/agent"} <= paths


def test_the_seven_services_run_from_one_image_with_their_own_command() -> None:
    app = {name: svc for name, svc in services().items() if name not in INFRASTRUCTURE}
    assert set(app) == set(SERVICES)
    for name, svc in app.items():
        assert svc["image"] == APP_IMAGE and svc["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert svc["command"] == ["run", name]
        resolve_cli(svc["command"])
        assert svc["read_only"] is True and svc["tmpfs"] == ["/tmp"] and svc["user"] == "10001:10001"
        assert svc["cap_drop"] == ["ALL"]
        assert svc["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_the_migrate_job_upgrades_the_schema_then_sets_up_streams() -> None:
    migrate = services()["migrate"]
    assert migrate["image"] == APP_IMAGE and migrate["restart"] == "no"
    assert migrate["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = migrate["command"]
    invocations = coinpilot_invocations(script)
    assert invocations == [["db", "upgrade"], ["nats", "setup"]]
    for argv in invocations:
        resolve_cli(argv)


def test_the_cli_helper_runs_a_real_command() -> None:
    cli = services()["cli"]
    assert cli["profiles"] == ["debug"]
    resolve_cli(cli["command"])


def test_every_dependency_names_a_service_of_the_file() -> None:
    names = set(services())
    for name, svc in services().items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in names, f"{name} depends on unknown service {dependency}"
            if svc["depends_on"][dependency]["condition"] == "service_healthy":
                check = services()[dependency].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{dependency} has no healthcheck"


def test_every_bind_mount_exists_and_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes", {}))
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {INFRA / source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_third_party_images_are_pinned_to_a_version() -> None:
    for name, svc in services().items():
        image = svc["image"]
        if image == APP_IMAGE:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*(@sha256:[a-f0-9]{64})?", image), f"{name}: {image}"
        assert not image.endswith(":latest")


def test_the_build_context_holds_the_dockerfile() -> None:
    build = services()["risk"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"


def test_services_get_only_settings_they_read_and_n8n_stays_optional() -> None:
    for name in SERVICES:
        unknown = set(services()[name]["environment"]) - SETTINGS_ENV
        assert unknown == set(), f"{name}: {unknown}"
    assert services()["n8n"]["profiles"] == ["n8n"]
    always_on = [n for n, s in services().items() if "profiles" not in s]
    assert "n8n" not in always_on and "cli" not in always_on


def test_prometheus_scrapes_each_service_on_its_http_port_with_component_labels() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "coinpilot"]
    port = services()["risk"]["environment"]["COINPILOT_HTTP_PORT"]
    targets = {sc["labels"]["component"]: sc["targets"] for sc in job["static_configs"]}
    assert targets == {name: [f"{name}:{port}"] for name in SERVICES}
    assert all("service" not in sc["labels"] for sc in job["static_configs"])
    rules_mount = next(v for v in services()["prometheus"]["volumes"] if "rules" in v)
    assert config["rule_files"] == [rules_mount.split(":")[1] + "/*.rules.yml"]


def test_grafana_datasources_point_at_the_compose_services() -> None:
    sources = yaml.safe_load(
        (INFRA / "grafana" / "provisioning" / "datasources" / "coinpilot.yaml").read_text()
    )
    urls = {ds["uid"]: ds["url"] for ds in sources["datasources"]}
    assert urls["coinpilot-prometheus"] == "http://prometheus:9090"
    assert urls["coinpilot-postgres"] == "timescaledb:5432"
    env = services()["timescaledb"]["environment"]
    postgres = next(ds for ds in sources["datasources"] if ds["uid"] == "coinpilot-postgres")
    assert postgres["user"] == env["POSTGRES_USER"] and postgres["jsonData"]["database"] == env["POSTGRES_DB"]
    assert "POSTGRES_PASSWORD" in services()["grafana"]["environment"]


NATS_PASSWORDS = {password_env(name): f"test-{name}" for name in IDENTITIES}


def test_the_nats_config_is_accepted_by_nats_server() -> None:
    conf = INFRA / "nats" / "nats.conf"
    env = {**os.environ, **NATS_PASSWORDS}
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "jetstream" in conf.read_text()


def test_the_nats_config_refuses_to_start_without_a_password() -> None:
    env = {**os.environ, **NATS_PASSWORDS}
    del env["NATS_PASSWORD_EXECUTOR"]
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(INFRA / "nats" / "nats.conf")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0 and "NATS_PASSWORD_EXECUTOR" in result.stderr


def test_each_service_connects_as_its_own_nats_identity_and_the_jobs_as_the_operator() -> None:
    for name, svc in services().items():
        env = svc.get("environment", {})
        if name in SERVICES:
            who = name
        elif name in {"migrate", "cli"}:
            who = OPERATOR
        else:
            continue
        assert env["COINPILOT_NATS_USER"] == who
        assert env["COINPILOT_NATS_PASSWORD"].startswith("${" + password_env(who) + ":-")
    nats = services()["nats"]
    assert set(nats["environment"]) == {password_env(name) for name in IDENTITIES}
    assert "./nats:/etc/nats:ro" in nats["volumes"]
    assert "include ./auth.conf" in (INFRA / "nats" / "nats.conf").read_text()


@pytest.mark.parametrize("variable", ["POSTGRES_PASSWORD", *(password_env(name) for name in IDENTITIES)])
def test_one_password_variable_feeds_both_sides_of_a_connection(variable: str) -> None:
    text = COMPOSE.read_text()
    defaults = set(re.findall(r"\$\{" + variable + r":-([^}]*)\}", text))
    assert len(defaults) == 1, f"{variable} has different defaults: {defaults}"
