"""The Helm chart: lints, renders offline, every manifest is valid Kubernetes, bad values are refused.

Rendering uses the Helm v4 Go SDK through helm-python-sdk (no helm binary, no cluster). Manifests
are validated with kubernetes-validate in strict mode (unknown fields fail) against the oldest
supported and the newest bundled Kubernetes schema. The ServiceMonitor is a CRD that
kubernetes-validate has no schema for; it is checked structurally against the Services instead.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_python.errors import HelmError

from coinpilot.bus.permissions import IDENTITIES, authorization_conf, password_env
from coinpilot.runtime import SERVICES
from services.executor.settings import LiveSettings
from tests.deploy.support import CHART, coinpilot_invocations, resolve_cli
from tests.support.servers import nats_server_binary

KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
RELEASE, NAMESPACE = "cp", "trading"
CRD_KINDS = {"ServiceMonitor"}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SINGLE_WRITERS = {"collector", "risk", "executor"}
SCALING = {"indicator", "strategy", "agent", "notifier"}
# the executor on Upbit: the switch, the keys from an existing Secret, caps
LIVE = {
    "venue": "upbit",
    "live": {"enabled": True, "keysSecret": "upbit-keys", "maxOrderKrw": 2000000, "maxDailyKrw": 10000000},
}
# the official NATS chart's pods (release `nats`, namespace `messaging`, three replicas)
CLUSTER_URLS = [f"nats://nats-{i}.nats-headless.messaging.svc.cluster.local:4222" for i in range(3)]


@cache
def production_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values-production.yaml").read_text())


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path, text in render(values).items():
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.load_all(text, Loader=LOADER) if doc)
    return found


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn/Exists)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def with_values(base: dict[str, Any], *changes: tuple[str, Any]) -> dict[str, Any]:
    values = copy.deepcopy(base)
    for dotted, value in changes:
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


VARIANTS = {
    "default": lambda: {},
    "production": production_values,
    "strategy-config": lambda: {"strategyConfig": {"inline": {"risk": {"max_daily_loss_pct": 0.05}}}},
    "external-stores": lambda: {
        "nats": {"bundled": {"enabled": False}, "url": "nats://nats.messaging:4222"},
        "timescaledb": {"bundled": {"enabled": False}},
        "redis": {"bundled": {"enabled": False}},
        "secrets": {
            "databaseUrl": "postgresql+asyncpg://cp:pw@pg:5432/coinpilot",
            "redisUrl": "redis://r:6379/0",
        },
    },
    "external-nats-cluster": lambda: {
        "nats": {"bundled": {"enabled": False}, "url": ",".join(CLUSTER_URLS), "streamReplicas": 3},
    },
    "live-executor": lambda: with_values(production_values(), ("services.executor", LIVE)),
}


def variant_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, values in VARIANTS.items():
        for doc in objects(values()):
            yield name, doc


# ---- lint and Kubernetes schemas ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production", "live-executor"])
def test_the_chart_lints_cleanly_in_strict_mode(variant: str) -> None:
    report = helm.lint(str(CHART), VARIANTS[variant](), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], problems or report["errors"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_manifest_is_valid_kubernetes_in_strict_mode(kube_version: str) -> None:
    checked = 0
    for variant, doc in variant_objects():
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")
        checked += 1
    assert checked > 60


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Guards the guard: strict mode really refuses fields Kubernetes does not know."""
    deployment = next(iter(of_kind(objects(), "Deployment").values()))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


# ---- values schema -----------------------------------------------------------------------------

BAD_VALUES = [
    ("a single writer scaled to four", {"services": {"risk": {"replicas": 4}}}, "/services/risk/replicas"),
    ("an unknown AI provider", {"config": {"llm": {"provider": "gemini"}}}, "/config/llm/provider"),
    ("a misspelt key", {"services": {"executor": {"replica": 1}}}, "replica"),
    (
        "autoscaling a single writer",
        {"services": {"collector": {"autoscaling": {"enabled": True}}}},
        "autoscaling",
    ),
    ("a tag as digest", {"image": {"digest": "latest"}}, "/image/digest"),
    ("a symbol in the wrong form", {"config": {"symbols": ["BTC/KRW"]}}, "/config/symbols/0"),
    ("a run id with spaces", {"config": {"runId": "my replay"}}, "/config/runId"),
    ("an external NATS without URL", {"nats": {"bundled": {"enabled": False}}}, "/nats/url"),
    (
        "a NATS URL list with a non-NATS member",
        {"nats": {"bundled": {"enabled": False}, "url": "nats://a:4222,http://b:4222"}},
        "/nats/url",
    ),
    ("more stream replicas than JetStream allows", {"nats": {"streamReplicas": 7}}, "/nats/streamReplicas"),
    ("no stream replicas", {"nats": {"streamReplicas": 0}}, "/nats/streamReplicas"),
    (
        "a memory limit that is not a quantity",
        {"services": {"agent": {"resources": {"limits": {"memory": "lots"}}}}},
        "/services/agent/resources/limits/memory",
    ),
    ("a database URL of another driver", {"secrets": {"databaseUrl": "mysql://x"}}, "/secrets/databaseUrl"),
    ("an unknown venue", {"services": {"executor": {"venue": "binance"}}}, "/services/executor/venue"),
    (
        "an Upbit key given as a value",
        {"services": {"executor": {"live": {"accessKey": "my-access-key"}}}},
        "accessKey",
    ),
    (
        "a daily cap of nothing",
        {"services": {"executor": {"live": {"maxDailyKrw": 0}}}},
        "/services/executor/live/maxDailyKrw",
    ),
]


@pytest.mark.parametrize(("case", "values", "key"), BAD_VALUES, ids=[c for c, _, _ in BAD_VALUES])
def test_invalid_values_are_refused_naming_the_key(case: str, values: dict[str, Any], key: str) -> None:
    with pytest.raises(HelmError) as raised:
        render(values)
    message = str(raised.value)
    assert "values don't meet the specifications of the schema" in message
    assert key in message, message


TEMPLATE_FAILURES = [
    (
        "more partitioned replicas than symbols",
        {
            "config": {"symbols": ["KRW-BTC", "KRW-ETH"]},
            "partitions": {"count": 8},
            "services": {"indicator": {"autoscaling": {"enabled": True, "maxReplicas": 3}}},
        },
        "services.indicator.autoscaling.maxReplicas (3) exceeds the number of symbols (2)",
    ),
    (
        "fixed replicas above the symbols",
        {
            "config": {"symbols": ["KRW-BTC"]},
            "partitions": {"count": 8},
            "services": {"strategy": {"replicas": 2}},
        },
        "services.strategy.replicas (2) exceeds the number of symbols (1)",
    ),
    (
        "replicas of a per-symbol stage without partitions",
        {"services": {"strategy": {"replicas": 2}}},
        "services.strategy.replicas (2) needs partitions.count > 1: without partitions every replica of "
        "strategy reads the same durable consumers",
    ),
    (
        "collector replicas without partitions",
        {"services": {"collector": {"replicas": 2}}},
        "services.collector.replicas (2) needs partitions.count > 1: without partitions every replica of "
        "collector reads the same durable consumers",
    ),
    (
        "more collector replicas than symbols",
        {
            "config": {"symbols": ["KRW-BTC", "KRW-ETH"]},
            "partitions": {"count": 8},
            "services": {"collector": {"replicas": 3}},
        },
        "services.collector.replicas (3) exceeds the number of symbols (2)",
    ),
    (
        "an HPA of a per-symbol stage without partitions",
        {"services": {"indicator": {"autoscaling": {"enabled": True, "maxReplicas": 3}}}},
        "services.indicator.autoscaling.maxReplicas (3) needs partitions.count > 1",
    ),
    (
        "more replicas than partitions",
        {"partitions": {"count": 2}, "services": {"indicator": {"replicas": 3}}},
        "services.indicator.replicas (3) exceeds partitions.count (2)",
    ),
    (
        "a heartbeat too slow for the lease",
        {"partitions": {"count": 4, "leaseSeconds": 4, "heartbeatSeconds": 2}},
        "partitions.heartbeatSeconds (2) must be less than half of partitions.leaseSeconds (4)",
    ),
    (
        "an HPA whose minimum exceeds its maximum",
        {"services": {"agent": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}}},
        "services.agent.autoscaling.minReplicas (3) is greater than maxReplicas (2)",
    ),
    (
        "a strategy file and inline values at once",
        {"strategyConfig": {"file": "a: 1\n", "inline": {"a": 2}}},
        "set strategyConfig.file or strategyConfig.inline, not both",
    ),
    (
        "replicated streams on the bundled single-node NATS",
        {"nats": {"streamReplicas": 3}},
        "nats.streamReplicas (3) needs a NATS cluster of at least 3 nodes, and the bundled NATS is one node",
    ),
    (
        "an external database without URL",
        {"timescaledb": {"bundled": {"enabled": False}}},
        "secrets.databaseUrl is required",
    ),
    (
        "the Upbit venue without the live switch",
        {"services": {"executor": {"venue": "upbit", "live": {"keysSecret": "upbit-keys"}}}},
        "services.executor.venue=upbit trades real money: set services.executor.live.enabled=true",
    ),
    (
        "the Upbit venue without a keys Secret",
        {"services": {"executor": {"venue": "upbit", "live": {"enabled": True}}}},
        "services.executor.venue=upbit needs services.executor.live.keysSecret",
    ),
    (
        "the live switch on a paper executor",
        {"services": {"executor": {"live": {"enabled": True, "keysSecret": "upbit-keys"}}}},
        "services.executor.live.enabled=true but services.executor.venue is paper",
    ),
]


@pytest.mark.parametrize(
    ("case", "values", "message"), TEMPLATE_FAILURES, ids=[c for c, _, _ in TEMPLATE_FAILURES]
)
def test_inconsistent_values_fail_the_render_with_the_reason(
    case: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError) as raised:
        render(values)
    assert message in str(raised.value)


# ---- workloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_one_deployment_per_service_runs_that_service(variant: str) -> None:
    deployments = of_kind(objects(VARIANTS[variant]()), "Deployment")
    assert {component(d) for d in deployments.values()} == set(SERVICES)
    for deployment in deployments.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["run", component(deployment)]
        resolve_cli(container["args"])


@pytest.mark.parametrize("variant", ["default", "production"])
def test_service_pods_are_probed_locked_down_and_write_only_to_tmp(variant: str) -> None:
    for deployment in of_kind(objects(VARIANTS[variant]()), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_single_writers_are_replaced_never_doubled_and_scaling_stages_roll() -> None:
    for deployment in of_kind(objects(), "Deployment").values():
        kind = deployment["spec"]["strategy"]["type"]
        assert kind == ("Recreate" if component(deployment) in SINGLE_WRITERS else "RollingUpdate")


def test_every_service_has_a_metrics_service_a_pdb_and_the_servicemonitor_finds_it() -> None:
    docs = objects(production_values())
    deployments = of_kind(docs, "Deployment")
    services = {component(s): s for s in of_kind(docs, "Service").values()}
    pdbs = {component(p): p for p in of_kind(docs, "PodDisruptionBudget").values()}
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/part-of"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["relabelings"][0]["targetLabel"] == "component"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    scraped = {
        component(s)
        for s in services.values()
        if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    }
    assert scraped == set(SERVICES)
    for deployment in deployments.values():
        name = component(deployment)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = services[name]
        assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "coinpilot"
        assert all(pod_labels[k] == v for k, v in service["spec"]["selector"].items())
        assert (
            service["spec"]["ports"][0]["name"] == "http"
            and service["spec"]["ports"][0]["targetPort"] == "http"
        )
        assert selects(pdbs[name]["spec"]["selector"], pod_labels)


def test_the_hpa_scales_only_the_stages_that_scale_and_owns_their_replicas() -> None:
    values = with_values(
        production_values(), ("services.indicator.autoscaling.enabled", True), ("partitions.count", 8)
    )
    docs = objects(values)
    deployments = of_kind(docs, "Deployment")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert {component(h) for h in hpas.values()} == {"indicator", "agent", "notifier"}
    assert {component(h) for h in hpas.values()} <= SCALING
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert "replicas" not in deployments[target["name"]]["spec"]
        assert hpa["spec"]["maxReplicas"] <= len(values["config"]["symbols"])


def test_no_servicemonitor_or_hpa_by_default() -> None:
    docs = objects()
    assert of_kind(docs, "ServiceMonitor") == {} and of_kind(docs, "HorizontalPodAutoscaler") == {}


# ---- configuration and secrets -----------------------------------------------------------------


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def executor_env(values: dict[str, Any]) -> dict[str, Any]:
    (executor,) = [d for d in of_kind(objects(values), "Deployment").values() if component(d) == "executor"]
    return env_of(executor["spec"]["template"]["spec"]["containers"][0])


def test_the_executor_trades_on_paper_unless_the_live_venue_is_configured() -> None:
    for values in ({}, production_values()):
        env = executor_env(values)
        assert env["COINPILOT_EXECUTOR_VENUE"] == "paper"
        assert not {k for k in env if "LIVE" in k or "KEY" in k or "_KRW" in k or "RECONCILE" in k}


def test_the_live_executor_gets_the_switch_the_keys_by_reference_and_the_caps_and_nobody_else_does() -> None:
    values = VARIANTS["live-executor"]()
    env = executor_env(values)
    assert env["COINPILOT_EXECUTOR_VENUE"] == "upbit" and env["COINPILOT_LIVE_TRADING"] == "true"
    for name, key in (("ACCESS", "UPBIT_ACCESS_KEY"), ("SECRET", "UPBIT_SECRET_KEY")):
        assert env[f"COINPILOT_UPBIT_{name}_KEY"] == {"secretKeyRef": {"name": "upbit-keys", "key": key}}
    assert (env["COINPILOT_EXECUTOR_MAX_ORDER_KRW"], env["COINPILOT_EXECUTOR_MAX_DAILY_KRW"]) == (
        "2000000",
        "10000000",
    )
    assert env["COINPILOT_RECONCILE_INTERVAL_SECONDS"] == "300"
    assert env["COINPILOT_UPBIT_BASE_URL"] == "https://api.upbit.com"
    env = {k: v for k, v in env.items() if "VENUE" in k or "LIVE" in k or "_KEY" in k or "_KRW" in k}
    docs = objects(values)
    for deployment in of_kind(docs, "Deployment").values():
        if component(deployment) != "executor":
            others = set(env_of(deployment["spec"]["template"]["spec"]["containers"][0]))
            assert not others & set(env), component(deployment)  # nothing of the executor's venue
    assert of_kind(docs, "Secret") == {}  # production brings its own; the keys are in neither


def test_the_live_executors_environment_starts_it_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pod would have (the Secret's keys resolved) is what LiveSettings needs to go live."""
    env = executor_env(VARIANTS["live-executor"]())
    keys = {"COINPILOT_UPBIT_ACCESS_KEY": "access", "COINPILOT_UPBIT_SECRET_KEY": "secret"}
    for name, value in {**{k: v for k, v in env.items() if isinstance(v, str)}, **keys}.items():
        monkeypatch.setenv(name, value)
    settings = LiveSettings()
    assert (settings.venue, settings.live_trading) == ("upbit", True)
    assert (settings.max_order_krw, settings.max_daily_krw) == (2_000_000, 10_000_000)
    settings.require_live()  # both keys and the switch: the executor starts live


def test_a_second_live_executor_is_refused_even_without_the_schema(tmp_path: Path) -> None:
    """Two executors on one Upbit account are refused by the template, with or without the schema
    (``helm install --skip-schema-validation`` skips values.schema.json), hot standby or not: a
    standby is safe for paper, but live it would be a second process holding the keys."""
    values = {"standby": {"enabled": True}, "services": {"executor": {**LIVE, "replicas": 2}}}
    with pytest.raises(HelmError) as checked:
        render(values)
    chart = tmp_path / "coinpilot"
    shutil.copytree(CHART, chart)
    (chart / "values.schema.json").unlink()
    with helm.Chart.load(str(chart)) as unchecked, pytest.raises(HelmError) as raised:
        unchecked.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    refused = "services.executor.replicas (2) with venue=upbit: one executor per Upbit account"
    assert refused in str(raised.value) and refused in str(checked.value)


def test_the_strategy_config_is_a_mounted_configmap_named_by_the_environment() -> None:
    docs = objects(VARIANTS["strategy-config"]())
    (config_map,) = [cm for name, cm in of_kind(docs, "ConfigMap").items() if name.endswith("-strategy")]
    assert yaml.safe_load(config_map["data"]["strategy.yaml"]) == {"risk": {"max_daily_loss_pct": 0.05}}
    for deployment in of_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        path = env_of(container)["COINPILOT_STRATEGY_CONFIG"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "strategy")
        volume = next(v for v in pod["volumes"] if v["name"] == "strategy")
        assert path == f"{mount['mountPath']}/strategy.yaml" and mount["readOnly"] is True
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]


def test_a_strategy_file_is_shipped_verbatim() -> None:
    """`--set-file strategyConfig.file=...`: comments, indentation, tabs and Korean survive."""
    text = "  # indented first line\nregimes:\n  BULL: {}  # 상승장\n\tnote: tab\n"
    docs = objects({"strategyConfig": {"file": text}})
    (config_map,) = [cm for name, cm in of_kind(docs, "ConfigMap").items() if name.endswith("-strategy")]
    assert config_map["data"]["strategy.yaml"] == text


def test_an_existing_strategy_configmap_is_mounted_and_none_is_rendered() -> None:
    docs = objects({"strategyConfig": {"existingConfigMap": "my-strategy"}})
    assert not [name for name in of_kind(docs, "ConfigMap") if name.endswith("-strategy")]
    for deployment in of_kind(docs, "Deployment").values():
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "strategy")
        assert volume["configMap"]["name"] == "my-strategy"


def test_without_a_strategy_config_the_image_default_is_used() -> None:
    for deployment in of_kind(objects(), "Deployment").values():
        assert "COINPILOT_STRATEGY_CONFIG" not in env_of(
            deployment["spec"]["template"]["spec"]["containers"][0]
        )


def test_every_environment_variable_is_a_setting_the_services_read() -> None:
    from tests.deploy.support import SETTINGS_ENV

    for variant, doc in variant_objects():
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            unknown = set(env_of(container)) - SETTINGS_ENV
            assert unknown == set(), f"{variant}: {doc['metadata']['name']} sets {unknown}"


def test_secrets_come_from_the_existing_secret_and_none_is_rendered_in_production() -> None:
    docs = objects(production_values())
    assert of_kind(docs, "Secret") == {}
    secret = production_values()["secrets"]["existingSecret"]
    for doc in [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]:
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            refs = [
                v["secretKeyRef"]
                for v in env_of(container).values()
                if isinstance(v, dict) and "secretKeyRef" in v
            ]
            assert refs and all(ref["name"] == secret for ref in refs)
            assert (
                env_of(container)["COINPILOT_DATABASE_URL"]["secretKeyRef"]["key"] == "COINPILOT_DATABASE_URL"
            )


def test_each_service_gets_only_the_secrets_it_uses() -> None:
    llm = {"COINPILOT_ANTHROPIC_API_KEY", "COINPILOT_OPENAI_API_KEY"}
    webhooks = {"COINPILOT_DISCORD_WEBHOOK_URL", "COINPILOT_N8N_WEBHOOK_SECRET", "COINPILOT_N8N_URL"}
    expected = {"agent": llm, "notifier": llm | webhooks}
    for deployment in of_kind(objects(production_values()), "Deployment").values():
        env = set(env_of(deployment["spec"]["template"]["spec"]["containers"][0]))
        assert env & (llm | webhooks) == expected.get(component(deployment), set()), component(deployment)


def test_the_chart_managed_secret_wires_the_bundled_stores() -> None:
    import base64

    docs = objects()
    (secret,) = of_kind(docs, "Secret").values()
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    fullname = secret["metadata"]["name"]
    assert data["COINPILOT_DATABASE_URL"] == (
        f"postgresql+asyncpg://coinpilot:{data['POSTGRES_PASSWORD']}@{fullname}-timescaledb:5432/coinpilot"
    )
    assert data["COINPILOT_REDIS_URL"] == f"redis://:{data['REDIS_PASSWORD']}@{fullname}-redis:6379/0"
    assert {k for k in data if k.startswith("NATS_")} == {password_env(name) for name in IDENTITIES}
    assert all(len(data[password_env(name)]) == 32 for name in IDENTITIES)
    assert len({data[password_env(name)] for name in IDENTITIES}) == len(IDENTITIES)
    services = {component(s): s for s in of_kind(docs, "Service").values()}
    assert {"nats", "timescaledb", "redis"} <= services.keys()


# ---- the hook Job ------------------------------------------------------------------------------


def job_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = of_kind(docs, "Job").values()
    return job


@pytest.mark.parametrize(
    ("variant", "hook"),
    [
        ("production", "pre-install,pre-upgrade"),
        ("external-stores", "pre-install,pre-upgrade"),
        ("default", "post-install,pre-upgrade"),
    ],
)
def test_the_migration_hook_upgrades_the_schema_then_sets_up_streams(variant: str, hook: str) -> None:
    docs = objects(VARIANTS[variant]())
    job = job_of(docs)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == hook
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["db", "upgrade"]]
    assert [c["args"] for c in pod["containers"]] == [["nats", "setup"]]
    for container in pod["initContainers"] + pod["containers"]:
        resolve_cli(container["args"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_with_external_stores_the_pre_install_hook_gets_its_secret_first() -> None:
    docs = objects(VARIANTS["external-stores"]())
    job = job_of(docs)
    secrets = of_kind(docs, "Secret")
    ref = env_of(job["spec"]["template"]["spec"]["containers"][0])["COINPILOT_DATABASE_URL"]["secretKeyRef"]
    hook_secret = secrets[ref["name"]]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default", "the chart's SA comes later"
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


# ---- bundled stores ----------------------------------------------------------------------------


def test_bundled_stores_are_statefulsets_with_volumes_and_production_bundles_none() -> None:
    sets = of_kind(objects(), "StatefulSet")
    assert {component(s) for s in sets.values()} == {"nats", "timescaledb", "redis"}
    for statefulset in sets.values():
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert claim["metadata"]["name"] in {m["name"] for m in mounts}
        assert statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert of_kind(objects(production_values()), "StatefulSet") == {}


def bundled_nats_config(docs: list[dict[str, Any]]) -> str:
    return next(cm for name, cm in of_kind(docs, "ConfigMap").items() if name.endswith("-nats"))["data"][
        "nats.conf"
    ]


def test_bundled_nats_runs_jetstream_with_one_user_per_identity_from_the_secret() -> None:
    docs = objects()
    config = bundled_nats_config(docs)
    assert "jetstream" in config and authorization_conf() in config
    (nats,) = [s for s in of_kind(docs, "StatefulSet").values() if component(s) == "nats"]
    env = env_of(nats["spec"]["template"]["spec"]["containers"][0])
    (secret,) = of_kind(docs, "Secret")
    for name in IDENTITIES:
        assert env[password_env(name)]["secretKeyRef"] == {"name": secret, "key": password_env(name)}


def test_the_bundled_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(bundled_nats_config(objects()).replace("/data/jetstream", str(tmp_path / "js")))
    env = {**os.environ, "POD_NAME": "nats-0", **{password_env(n): f"pw-{n}" for n in IDENTITIES}}
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variant", ["default", "external-stores"])
def test_each_service_connects_as_its_own_nats_identity_and_the_hook_job_as_the_operator(
    variant: str,
) -> None:
    docs = objects(VARIANTS[variant]())
    pods = {component(d): d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment").values()}
    pods["operator"] = job_of(docs)["spec"]["template"]["spec"]
    assert set(pods) == {*SERVICES, "operator"}
    for who, pod in pods.items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            env = env_of(container)
            assert env["COINPILOT_NATS_USER"] == who
            assert env["COINPILOT_NATS_PASSWORD"]["secretKeyRef"]["key"] == password_env(who)


def test_an_external_nats_cluster_and_its_stream_replicas_reach_every_pod() -> None:
    """Services and the hook Job (which creates the streams) get the cluster's URL list and the
    replicas; the services split that list into the servers they reconnect across."""
    from coinpilot.bus.connect import connect_options
    from coinpilot.settings import CommonSettings

    docs = objects(VARIANTS["external-nats-cluster"]())
    assert not [d for d in of_kind(docs, "StatefulSet").values() if component(d) == "nats"]
    pods = [d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment").values()]
    pods.append(job_of(docs)["spec"]["template"]["spec"])
    assert len(pods) == len(SERVICES) + 1
    for pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            env = env_of(container)
            assert env["COINPILOT_STREAM_REPLICAS"] == "3"
            settings = CommonSettings(nats_url=env["COINPILOT_NATS_URL"], stream_replicas=3)
            assert connect_options(settings, "coinpilot-test")["servers"] == CLUSTER_URLS


def test_streams_default_to_one_replica_with_the_bundled_nats() -> None:
    for deployment in of_kind(objects(), "Deployment").values():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["COINPILOT_STREAM_REPLICAS"] == "1"


def test_external_nats_passwords_per_identity_reach_the_chart_secret() -> None:
    import base64

    values = with_values(
        VARIANTS["external-stores"](), ("secrets.natsPasswords", {"risk": "r", "operator": "o"})
    )
    docs = objects(values)
    data = next(s for n, s in of_kind(docs, "Secret").items() if not n.endswith("-migrate"))["data"]
    assert base64.b64decode(data["NATS_PASSWORD_RISK"]) == b"r" and "NATS_PASSWORD_EXECUTOR" not in data
    hook = next(s for n, s in of_kind(docs, "Secret").items() if n.endswith("-migrate"))["data"]
    assert base64.b64decode(hook["NATS_PASSWORD_OPERATOR"]) == b"o" and "NATS_PASSWORD_RISK" not in hook


def test_credentials_files_are_per_identity_and_one_shared_user_remains_possible() -> None:
    docs = objects(production_values())
    for deployment in of_kind(docs, "Deployment").values():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["COINPILOT_NATS_CREDS_FILE"] == f"/etc/coinpilot/nats-creds/{component(deployment)}.creds"
        assert "COINPILOT_NATS_USER" not in env
    shared = with_values(VARIANTS["external-stores"](), ("nats.identities", False))
    for deployment in of_kind(objects(shared), "Deployment").values():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["COINPILOT_NATS_USER"] == "coinpilot"
        assert env["COINPILOT_NATS_PASSWORD"]["secretKeyRef"]["key"] == "COINPILOT_NATS_PASSWORD"


# ---- network policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_network_policies_cover_every_pod_the_chart_runs(variant: str) -> None:
    docs = objects(VARIANTS[variant]())
    policies = of_kind(docs, "NetworkPolicy").values()
    pods = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}
    ]
    for labels in pods:
        assert any(selects(p["spec"]["podSelector"], labels) for p in policies), labels


def test_bundled_stores_accept_only_this_releases_services_and_migrations() -> None:
    docs = objects()
    store_policy = next(
        p for name, p in of_kind(docs, "NetworkPolicy").items() if name.endswith("-datastores")
    )
    (rule,) = store_policy["spec"]["ingress"]
    (peer,) = rule["from"]
    clients = {component(d) for d in docs if d["kind"] in {"Deployment", "Job"}}
    assert set(peer["podSelector"]["matchExpressions"][0]["values"]) == clients
    assert {p["port"] for p in rule["ports"]} == {4222, 5432, 6379}


# ---- NOTES -------------------------------------------------------------------------------------


def test_the_notes_show_how_to_tail_and_replay_with_real_commands() -> None:
    notes = render()["coinpilot/templates/NOTES.txt"]
    commands: list[list[str]] = []
    for line in notes.replace("\\\n", " ").splitlines():
        if " -- " in line:
            commands.extend(coinpilot_invocations(line.split(" -- ", 1)[1]))
    assert [c[0] for c in commands].count("tail") >= 1
    assert any(c[0] == "replay" and "--pace" in c and "lockstep" in c for c in commands)
    for argv in commands:
        resolve_cli(argv)
    assert f"kubectl -n {NAMESPACE} exec deploy/{RELEASE}-coinpilot-" in notes


def test_partitioned_replicas_get_their_partitions_and_their_pod_name_as_member_id() -> None:
    values = with_values(
        production_values(),
        ("partitions.count", 8),
        ("services.indicator.autoscaling.enabled", True),
        ("services.strategy.autoscaling.enabled", True),
        ("services.collector.replicas", 2),
    )
    docs = objects(values)
    deployments = of_kind(docs, "Deployment")
    pdbs = {component(d) for d in of_kind(docs, "PodDisruptionBudget").values()}
    for doc in deployments.values():
        name = component(doc)
        env = env_of(doc["spec"]["template"]["spec"]["containers"][0])
        if name in {"indicator", "strategy", "collector"}:
            assert env["COINPILOT_PARTITIONS"] == "8"
            assert env["COINPILOT_MEMBER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            assert float(env["COINPILOT_PARTITION_HEARTBEAT_SECONDS"]) * 2 < float(
                env["COINPILOT_PARTITION_LEASE_SECONDS"]
            )
            assert name in pdbs and doc["spec"]["strategy"]["type"] == "RollingUpdate"
            assert name != "collector" or doc["spec"]["replicas"] == 2
        else:
            assert "COINPILOT_PARTITIONS" not in env and "COINPILOT_MEMBER_ID" not in env


def test_risk_and_executor_replicas_need_standby_which_rolls_them_and_gives_each_pod_an_identity() -> None:
    for name in ("risk", "executor"):
        with pytest.raises(HelmError) as raised:
            render(with_values(production_values(), (f"services.{name}.replicas", 2)))
        assert f"services.{name}.replicas (2) needs standby.enabled=true" in str(raised.value)
    values = with_values(
        production_values(),
        ("standby.enabled", True),
        ("services.risk.replicas", 2),
        ("services.executor.replicas", 2),
    )
    docs = objects(values)
    pdbs = {component(d) for d in of_kind(docs, "PodDisruptionBudget").values()}
    for doc in of_kind(docs, "Deployment").values():
        name = component(doc)
        env = env_of(doc["spec"]["template"]["spec"]["containers"][0])
        if name in {"risk", "executor"}:
            assert doc["spec"]["replicas"] == 2 and name in pdbs
            assert doc["spec"]["strategy"]["type"] == "RollingUpdate"
            assert env["COINPILOT_STANDBY"] == "true"
            assert env["COINPILOT_MEMBER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            assert "COINPILOT_PARTITIONS" not in env
        else:
            assert "COINPILOT_STANDBY" not in env


def test_standby_is_off_by_default() -> None:
    for doc in of_kind(objects(), "Deployment").values():
        env = env_of(doc["spec"]["template"]["spec"]["containers"][0])
        assert "COINPILOT_STANDBY" not in env
        if component(doc) in {"risk", "executor"}:
            assert doc["spec"]["strategy"]["type"] == "Recreate"


def test_partitions_are_off_by_default() -> None:
    for doc in of_kind(objects(), "Deployment").values():
        env = env_of(doc["spec"]["template"]["spec"]["containers"][0])
        assert env.get("COINPILOT_PARTITIONS") in (None, "1")
        assert doc["spec"].get("replicas", 1) <= 1 or component(doc) not in {
            "indicator",
            "strategy",
            "collector",
        }
        if component(doc) == "collector":  # one poller, replaced (never two) without partitions
            assert doc["spec"]["strategy"]["type"] == "Recreate"
