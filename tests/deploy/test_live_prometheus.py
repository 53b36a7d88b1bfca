"""The dashboards and alerts, evaluated by a real Prometheus scraping the seven services after a replay.

The seven services run as processes (``coinpilot run <service>``), each on its own HTTP port, with
their default settings (the ``live`` run, offline rules reviewer, Upbit poller off); a real
``prometheus`` scrapes them every second with the job/label scheme of
``infra/prometheus/prometheus.yml`` (the config is generated from that file) and loads the real
alert rules. 5h20m of the bundled sample are replayed lockstep under the run id ``live``, as
the collector would publish them, then, once a scrape taken after the replay is in, every PromQL
expression of every dashboard and every alert expression goes through Prometheus' ``/api/v1/query``:
each must evaluate, and each listed in ``HAS_DATA`` must return at least one series. An expression
over a metric name or label the services do not export returns nothing, so a renamed metric fails
here instead of leaving a panel empty in production.

The run is the live deployment's, so its state must start empty: this module has servers of its
own (a nats-server and a redis-server process, a fresh database on the machine's PostgreSQL).
Everything before the window is imported into ``market_data`` like a backfill, so the indicator
and the agent's market context start warm. The window (2023-03-26 04:40-10:00 UTC, the sample's
markets published as KRW-BTC/KRW-ETH so the KRW equity gauge applies) buys twice, sells once, and
the AI confirms, rejects and skips (guardrail) orders. Notifications go to a local Discord webhook
(``tests/support/fake_webhooks.py``).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml

from apps.demo import ServiceProcess, sample_files, start_services, stop_services, wait_ready
from coinpilot.bus import ensure_streams
from coinpilot.candle_files import load_candles
from coinpilot.contracts import MinuteCandle
from coinpilot.db import Database, upgrade
from coinpilot.db.market import copy_candles
from coinpilot.embedded import EmbeddedStack
from coinpilot.replay import parse_pace, replay_candles
from coinpilot.runtime import SERVICES
from tests.deploy.support import (
    INFRA,
    PROMETHEUS_BUILTIN,
    RULES,
    dashboard_files,
    datasource_uid,
    panel_targets,
    promql_metric_names,
    require_binary,
)
from tests.support.fake_webhooks import FakeDiscord
from tests.support.servers import (
    NatsProcess,
    RedisProcess,
    create_database,
    drop_database,
    free_port,
    wait_for,
)

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]

PROMETHEUS_YML = INFRA / "prometheus" / "prometheus.yml"
PROM_UID = "coinpilot-prometheus"

REPLAY_FROM = datetime(2023, 3, 26, 4, 40, tzinfo=UTC)
REPLAY_TO = datetime(2023, 3, 26, 10, 0, tzinfo=UTC)
MARKETS = {"USDT-BTC": "KRW-BTC", "USDT-ETH": "KRW-ETH"}
RUN_ID = "live"

# Dashboard expressions that must return at least one series after the replay
# ("<dashboard> #<panel id> <panel title> / <refId>").
HAS_DATA: frozenset[str] = frozenset(
    {
        "ai.json #3 Calls (24h) / A",
        "ai.json #4 Error streak / A",
        "ai.json #5 Global block / A",
        "ai.json #7 Decisions / A",
        "ai.json #8 Reject reasons (range) / A",
        "ai.json #10 Guardrail blocks / A",
        "ai.json #12 Calls / min / A",
        "overview.json #2 Equity / A",
        "overview.json #3 Realised PnL today / A",
        "overview.json #4 Open positions / A",
        "overview.json #5 Trades (24h) / A",
        "overview.json #6 Trading / A",
        "overview.json #7 Cooldown / A",
        "overview.json #8 Equity / A",
        "overview.json #9 Realised PnL today / A",
        "overview.json #13 Fills per hour / A",
        "overview.json #14 Strategy signals / A",
        "overview.json #15 Risk decisions / A",
        "overview.json #18 Current regime / A",
        "overview.json #19 Regime by symbol (1 = current) / A",
        "pipeline.json #2 Targets up / A",
        "pipeline.json #3 Ready / A",
        "pipeline.json #5 Messages handled / s / A",
        "pipeline.json #10 End-to-end p99 (publish → handled) / A",
        "pipeline.json #10 End-to-end p99 (publish → handled) / B",
        "pipeline.json #11 Handler p99 / A",
        "pipeline.json #11 Handler p99 / B",
        "pipeline.json #13 Notifier delivery p95 / A",
        "pipeline.json #15 Pending (not yet delivered) / A",
        "pipeline.json #16 Ack pending (in flight) / A",
        "pipeline.json #20 Notifications / s / A",
    }
)
# The others, and why a healthy replay leaves them empty (they must still evaluate). The rules
# reviewer answers offline: no call goes over the network.
NO_DATA: dict[str, str] = {
    "ai.json #2 AI cost (24h) / A": "cost is counted for model calls over the network only",
    "ai.json #13 Call latency / A": "latency is observed for model calls over the network only",
    "ai.json #13 Call latency / B": "latency is observed for model calls over the network only",
    "ai.json #14 Cost per hour / A": "cost is counted for model calls over the network only",
    "ai.json #9 Pre-filter skips / A": "warm context, no BEAR entry: nothing for the pre-filter to skip",
    "overview.json #16 Volatility index (GARCH σ) / A": "GARCH needs 500 hourly returns; the sample has ~270",
    "pipeline.json #6 Handler failures / s / A": "no handler fails in a healthy run",
    "pipeline.json #7 Candles published / min / A": "the Upbit poller is off (the replay publishes)",
    "pipeline.json #8 Upbit requests / s / A": "the collector's Upbit poller is off",
    "pipeline.json #12 Upbit request p95 / A": "the collector's Upbit poller is off",
    "pipeline.json #17 Dead letters in range / A": "nothing is dead-lettered in a healthy run",
    "pipeline.json #18 Dead letters per hour / A": "nothing is dead-lettered in a healthy run",
    "pipeline.json #21 Redis fallbacks / A": "Redis is up the whole run",
}
# Alert expressions: silent after a healthy replay, except these.
FIRING_AFTER_REPLAY = {"CoinPilotNoCandles": "absent(coinpilot_candles_published_total): the poller is off"}
LOAD_DEPENDENT = {
    # risk handles a few dozen messages here: its p99 is its slowest one (~1 s on a loaded machine)
    "CoinPilotHighEndToEndLatency": "p99 publish-to-handled time depends on the machine's load",
}


# ---- the expressions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    label: str
    expr: str


def dashboard_expressions() -> list[Expression]:
    found: list[Expression] = []
    for path in dashboard_files():
        board = json.loads(path.read_text())
        for panel, target in panel_targets(board):
            if datasource_uid(panel, target) == PROM_UID:
                label = f"{path.name} #{panel['id']} {panel['title']} / {target['refId']}"
                found.append(Expression(label, target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def prometheus_variables(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric, label) of each ``label_values(metric, label)`` variable."""
    found = []
    for var in board.get("templating", {}).get("list", []):
        if var["datasource"]["uid"] == PROM_UID:
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["definition"])
            assert match, f"variable {var['name']} is not label_values(metric, label)"
            found.append((var["name"], match.group(1), match.group(2)))
    return found


# ---- the run ---------------------------------------------------------------------------------


def window_candles() -> tuple[list[MinuteCandle], list[MinuteCandle]]:
    candles = load_candles(sample_files(), end=REPLAY_TO, rename=MARKETS)
    return [c for c in candles if c.ts_open < REPLAY_FROM], [c for c in candles if c.ts_open >= REPLAY_FROM]


def prometheus_config(ports: dict[str, int], own_port: int) -> dict[str, Any]:
    """infra/prometheus/prometheus.yml with loopback targets, a 1 s scrape and the repo's rules."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    components = []
    for job in config["scrape_configs"]:
        if job["job_name"] != "coinpilot":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{own_port}"]}]
            continue
        for static in job["static_configs"]:
            assert len(static["targets"]) == 1, static
            component = static["labels"]["component"]
            components.append(component)
            static["targets"] = [f"127.0.0.1:{ports[component]}"]
    assert sorted(components) == sorted(SERVICES), f"prometheus.yml scrapes {components}"
    return config


@dataclass
class PrometheusProcess:
    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: dict[str, Any]) -> None:
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class LiveRun:
    prometheus: str
    window: str  # a PromQL duration covering the whole run: the dashboards' time range
    variables: dict[str, str]  # "$symbol" -> "(KRW-BTC|KRW-ETH)", as Grafana formats a selection
    replay_seconds: float
    notifications: Callable[[], int]  # webhooks the local Discord has answered 2xx so far
    exported: frozenset[str]  # metric names the services expose (HELP/TYPE), with or without samples


async def query(client: httpx.AsyncClient, expr: str) -> list[Any]:
    """The series of an instant query; fails unless Prometheus parsed and evaluated it."""
    response = await client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (
        f"{expr}: {body.get('errorType')}: {body.get('error')}"
    )
    data = body["data"]
    return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]


async def scraped_after(client: httpx.AsyncClient, moment: float) -> bool:
    """Every service target is up and its latest scrape started after ``moment`` (unix seconds)."""
    response = await client.get("/api/v1/query", params={"query": 'timestamp(up{job="coinpilot"} == 1)'})
    if response.status_code != 200:
        return False
    series = response.json()["data"]["result"]
    return len(series) == len(SERVICES) and all(float(s["value"][1]) > moment for s in series)


async def wait_scraped_after(client: httpx.AsyncClient, moment: float) -> None:
    await wait_for(lambda: scraped_after(client, moment), timeout=30, interval=0.1)


async def prometheus_ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/-/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def exposed_metrics(client: httpx.AsyncClient) -> frozenset[str]:
    """Every metric family the services' /metrics declare: Prometheus keeps their metadata even
    for a labelled instrument that has no sample yet."""
    response = await client.get("/api/v1/targets/metadata", params={"match_target": '{job="coinpilot"}'})
    return frozenset(entry["metric"] for entry in response.json()["data"])


async def grafana_selections(client: httpx.AsyncClient) -> dict[str, str]:
    """Each Prometheus variable's values, selected all, as Grafana puts them in a regex matcher."""
    selections: dict[str, str] = {}
    for path in dashboard_files():
        for name, metric, label in prometheus_variables(json.loads(path.read_text())):
            response = await client.get(f"/api/v1/label/{label}/values", params={"match[]": metric})
            values = response.json()["data"]
            assert values, f"{path.name}: variable ${name} (label_values({metric}, {label})) has no values"
            assert all(re.fullmatch(r"[A-Za-z0-9_-]+", v) for v in values), values
            selections["$" + name] = "(" + "|".join(values) + ")"
    return selections


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    """A NATS of this module's own: lockstep waits for every durable, other tests' included."""
    server = NatsProcess()
    server.start()
    yield server.url
    server.close()


@pytest.fixture(scope="module")
async def pg_url() -> AsyncIterator[str]:
    """A database of this module's own: the live run's ledger must start empty."""
    name, url = await create_database("cp_prom")
    yield url
    await drop_database(name)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis of this module's own: the live run's keys are not namespaced by a run id."""
    server = RedisProcess()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
async def live_run(
    nats_url: str, pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveRun]:
    prometheus = PrometheusProcess(require_binary("prometheus"), tmp_path_factory.mktemp("prometheus"))
    workdir = tmp_path_factory.mktemp("services")
    warm, replay = window_candles()
    await upgrade(pg_url)
    db = Database(pg_url)
    try:
        await copy_candles(db, warm)
    finally:
        await db.dispose()
    nc = await nats.connect(nats_url)
    discord = FakeDiscord()
    services: list[ServiceProcess] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        await discord.start()
        stack = EmbeddedStack(workdir, nats_url=nats_url, database_url=pg_url, redis_url=redis_url)
        services = start_services(
            stack,
            workdir,
            extra_env={
                "COINPILOT_RUN_ID": RUN_ID,
                "COINPILOT_COLLECTOR_UPBIT_ENABLED": "false",
                "COINPILOT_LLM_MODE_SOURCE": "rules",
                "COINPILOT_DISCORD_WEBHOOK_URL": discord.webhook_url,
            },
        )
        await wait_ready(services)
        started = time.time()
        prometheus.start(prometheus_config({s.name: s.port for s in services}, prometheus.port))
        async with httpx.AsyncClient(base_url=prometheus.url, timeout=5) as client:
            await wait_for(lambda: prometheus_ready(client), timeout=30, interval=0.1)
            await wait_scraped_after(client, started)
            replayed = await replay_candles(
                js, replay, run_id=RUN_ID, pace=parse_pace("lockstep"), drain_timeout=60
            )
            # two scrapes after the replay: a counter born at its end has the two samples rate() needs
            await wait_scraped_after(client, time.time())
            await wait_scraped_after(client, time.time())
            variables = await grafana_selections(client)
            exported = await exposed_metrics(client)
        window = f"{int(time.time() - started) + 60}s"
        yield LiveRun(
            prometheus.url, window, variables, replayed.seconds, lambda: len(discord.bodies()), exported
        )
    finally:
        prometheus.stop()
        stop_services(services)
        await discord.stop()
        await nc.close()


def unexported(expr: str, run: LiveRun) -> set[str]:
    """Metric names ``expr`` selects that no scraped service exposes (histogram series by family)."""
    missing = set()
    for name in promql_metric_names(expr) - PROMETHEUS_BUILTIN:
        families = {name} | {name.removesuffix(s) for s in ("_bucket", "_sum", "_count") if name.endswith(s)}
        if not families & run.exported:
            missing.add(name)
    return missing


def concrete(expr: str, run: LiveRun) -> str:
    """Grafana's substitution: built-in intervals span the run; variables select every value."""
    for builtin in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(builtin, run.window)
    for name, value in sorted(run.variables.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unreplaced variable in {expr}"
    return expr


# ---- the checks ------------------------------------------------------------------------------


def test_every_dashboard_expression_is_classified_once() -> None:
    labels = [e.label for e in dashboard_expressions()]
    assert len(labels) == len(set(labels)), "two targets share a label"
    assert not HAS_DATA & NO_DATA.keys()
    assert set(labels) == HAS_DATA | NO_DATA.keys(), (
        f"unclassified: {sorted(set(labels) - HAS_DATA - NO_DATA.keys())}; "
        f"stale: {sorted((HAS_DATA | NO_DATA.keys()) - set(labels))}"
    )
    alerts = {rule["alert"] for rule in alert_rules()}
    assert (FIRING_AFTER_REPLAY.keys() | LOAD_DEPENDENT.keys()) <= alerts


async def test_prometheus_scrapes_the_seven_services_with_the_infra_labels(live_run: LiveRun) -> None:
    async with httpx.AsyncClient(base_url=live_run.prometheus, timeout=5) as client:
        up = await query(client, 'up{job="coinpilot"}')
        handled = await query(client, "sum by (service, component) (coinpilot_messages_handled_total)")
    assert sorted(s["metric"]["component"] for s in up) == sorted(SERVICES)
    assert all(s["value"][1] == "1" for s in up), up
    # every service handled messages of the replay, under its own service label and target label
    assert sorted((s["metric"]["service"], s["metric"]["component"]) for s in handled) == sorted(
        (name, name) for name in SERVICES
    )


async def test_prometheus_loaded_and_evaluates_every_alert_rule(live_run: LiveRun) -> None:
    async with httpx.AsyncClient(base_url=live_run.prometheus, timeout=5) as client:
        body = (await client.get("/api/v1/rules")).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


async def test_the_sent_notifications_prometheus_counts_are_the_webhooks_discord_answered(
    live_run: LiveRun,
) -> None:
    """The notifier's report clock may still post (e.g. the daily report) after the replay has
    drained, so compare fresh readings until a scrape has caught up with the webhook server."""
    readings: list[tuple[list[float], int]] = []

    async def agree(client: httpx.AsyncClient) -> bool:
        answered = live_run.notifications()
        sent = await query(client, 'sum(coinpilot_notifier_deliveries_total{sink="discord", status="sent"})')
        readings.append(([float(s["value"][1]) for s in sent], answered))
        return readings[-1][0] == [answered]

    async with httpx.AsyncClient(base_url=live_run.prometheus, timeout=5) as client:
        try:
            await wait_for(lambda: agree(client), timeout=30, interval=0.5)
        except TimeoutError:
            pytest.fail(f"Prometheus never caught up with the Discord fake: {readings[-1]}")
    assert live_run.notifications() > 0


@pytest.mark.parametrize("expression", dashboard_expressions(), ids=lambda e: e.label)
async def test_each_dashboard_expression_evaluates_and_has_data_when_it_should(
    live_run: LiveRun, expression: Expression
) -> None:
    expr = concrete(expression.expr, live_run)
    assert unexported(expr, live_run) == set(), f"{expression.label}: selects metrics no service exposes"
    series: list[Any] = []

    async def has_series(client: httpx.AsyncClient) -> bool:
        series[:] = await query(client, expr)
        return bool(series)

    async with httpx.AsyncClient(base_url=live_run.prometheus, timeout=5) as client:
        if expression.label not in HAS_DATA:
            await query(client, expr)  # it must evaluate; an empty answer is by design
            return
        # increase()/rate() need two samples of a series in range; on a loaded machine a scrape can
        # miss its 1 s timeout, so give the scrapes a few seconds to settle before calling it empty
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: has_series(client), timeout=15, interval=0.5)
    assert series, f"{expression.label}: no series after the replay for {expr}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
async def test_each_alert_expression_evaluates_and_stays_silent_after_a_healthy_replay(
    live_run: LiveRun, rule: dict[str, Any]
) -> None:
    assert unexported(rule["expr"], live_run) == set(), f"{rule['alert']}: selects metrics no service exposes"
    async with httpx.AsyncClient(base_url=live_run.prometheus, timeout=5) as client:
        series = await query(client, rule["expr"])
    if rule["alert"] in FIRING_AFTER_REPLAY:
        assert series, f"{rule['alert']}: expected to fire ({FIRING_AFTER_REPLAY[rule['alert']]})"
    elif rule["alert"] not in LOAD_DEPENDENT:
        assert not series, f"{rule['alert']} would fire after a healthy replay: {series}"
