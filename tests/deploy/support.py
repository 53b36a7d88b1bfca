"""Helpers for the deployment tests: paths, the metric catalogue, PromQL names, CLI command checks."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest

from apps.cli.main import main as cli
from coinpilot.runtime import SERVICES

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CHART = REPO / "helm" / "coinpilot"
DASHBOARDS = INFRA / "grafana" / "dashboards"
RULES = INFRA / "prometheus" / "rules" / "coinpilot.rules.yml"
RULE_TESTS = INFRA / "prometheus" / "rules" / "tests"

# Every metric a dashboard or an alert may use, with its labels: the contract between the services
# and infra/ (histograms by base name; counters with their exposed _total name).
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
CATALOGUE: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in (
        # recorded by the runtime for every consumer (libs/coinpilot/metrics.py)
        ("coinpilot_messages_handled_total", COUNTER, "service subject"),
        ("coinpilot_messages_failed_total", COUNTER, "service subject"),
        ("coinpilot_messages_dead_lettered_total", COUNTER, "service subject"),
        ("coinpilot_handler_seconds", HISTOGRAM, "service subject"),
        ("coinpilot_end_to_end_seconds", HISTOGRAM, "service subject"),
        ("coinpilot_consumer_pending", GAUGE, "service durable"),
        ("coinpilot_consumer_ack_pending", GAUGE, "service durable"),
        ("coinpilot_service_ready", GAUGE, "service"),
        ("coinpilot_transient_retries_total", COUNTER, "service subject"),
        ("coinpilot_consumers_retrying", GAUGE, "service"),
        ("coinpilot_cache_fallbacks_total", COUNTER, "purpose"),
        # domain
        ("coinpilot_upbit_request_seconds", HISTOGRAM, "endpoint status"),
        ("coinpilot_candles_published_total", COUNTER, "symbol"),
        ("coinpilot_indicator_regime", GAUGE, "symbol regime"),
        ("coinpilot_strategy_signals_total", COUNTER, "symbol kind reason"),
        ("coinpilot_risk_decisions_total", COUNTER, "decision reason"),
        ("coinpilot_risk_trading_halted", GAUGE, ""),
        ("coinpilot_risk_cooldown_active", GAUGE, ""),
        ("coinpilot_volatility_index", GAUGE, "symbol"),
        ("coinpilot_ai_requests_total", COUNTER, "provider model status"),
        ("coinpilot_ai_decisions_total", COUNTER, "decision reason"),
        ("coinpilot_ai_prefilter_skips_total", COUNTER, "reason"),
        ("coinpilot_ai_request_seconds", HISTOGRAM, "provider"),
        ("coinpilot_ai_cost_usd_total", COUNTER, "provider model"),
        ("coinpilot_ai_guardrail_blocks_total", COUNTER, "reason"),
        ("coinpilot_ai_global_block", GAUGE, ""),
        ("coinpilot_ai_error_streak", GAUGE, ""),
        ("coinpilot_executor_fills_total", COUNTER, "symbol side"),
        ("coinpilot_active_positions", GAUGE, ""),
        ("coinpilot_equity_krw", GAUGE, ""),
        ("coinpilot_total_pnl", GAUGE, ""),
        ("coinpilot_trade_count_total", COUNTER, ""),
        ("coinpilot_notifier_deliveries_total", COUNTER, "sink event_type status"),
        ("coinpilot_notifier_delivery_seconds", HISTOGRAM, "sink event_type"),
    )
}
HISTOGRAMS = frozenset(name for name, (kind, _) in CATALOGUE.items() if kind == HISTOGRAM)
# Labels every scraped series also has (target labels) and the histogram bucket label.
TARGET_LABELS = frozenset({"job", "instance", "component", "le"})
PROMETHEUS_BUILTIN = frozenset({"up"})

# Settings the image understands (COINPILOT_ prefix).
SETTINGS_ENV = frozenset(
    f"COINPILOT_{name}"
    for name in (
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS_FILE",
        "NATS_TLS_CA",
        "NATS_TLS_CERT",
        "NATS_TLS_KEY",
        "STREAM_REPLICAS",
        "PARTITIONS",
        "MEMBER_ID",
        "PARTITION_LEASE_SECONDS",
        "PARTITION_HEARTBEAT_SECONDS",
        "STANDBY",
        "DATABASE_URL",
        "REDIS_URL",
        "RUN_ID",
        "STRATEGY_CONFIG",
        "SYMBOLS",
        "HTTP_PORT",
        "LOG_JSON",
        "LOG_LEVEL",
        "LLM_PROVIDER",
        "LLM_MODE",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "DISCORD_WEBHOOK_URL",
        "N8N_URL",
        "N8N_WEBHOOK_SECRET",
        "UPBIT_BASE_URL",
        "EXECUTOR_VENUE",
        "LIVE_TRADING",
        "UPBIT_ACCESS_KEY",
        "UPBIT_SECRET_KEY",
        "EXECUTOR_MAX_ORDER_KRW",
        "EXECUTOR_MAX_DAILY_KRW",
        "RECONCILE_INTERVAL_SECONDS",
    )
)


def require_binary(name: str) -> str:
    """The path of a tool the tests need; a missing tool is a failure, never a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: apt-get install -y prometheus); these tests need it")
    return path


def run_tool(args: Sequence[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# ---- PromQL ------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"})
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (strings, matchers, ranges and grouping lists removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"(?<![A-Za-z_:])[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        if token.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def catalogue_name(series_name: str) -> str:
    """``coinpilot_handler_seconds_bucket`` -> ``coinpilot_handler_seconds``; other names unchanged."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series_name.removesuffix(suffix)
        if base != series_name and base in HISTOGRAMS:
            return base
    return series_name


def unknown_metrics(expr: str) -> set[str]:
    known = CATALOGUE.keys() | PROMETHEUS_BUILTIN
    return {name for name in promql_metric_names(expr) if catalogue_name(name) not in known}


def promql_label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for labels in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        names.update(label.strip() for label in labels.split(",") if label.strip())
    return names


def unknown_labels(expr: str) -> set[str]:
    """Labels an expression uses that none of its metrics (nor the scrape target) has."""
    metrics = {catalogue_name(name) for name in promql_metric_names(expr)}
    known = set(TARGET_LABELS)
    for name in metrics:
        known |= CATALOGUE.get(name, ("", frozenset()))[1]
    return promql_label_names(expr) - known


# ---- dashboards --------------------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def datasource_uid(panel: dict[str, Any], target: dict[str, Any]) -> str:
    ds = target.get("datasource") or panel.get("datasource")
    assert isinstance(ds, dict), f"panel {panel.get('title')!r} has no datasource reference"
    return str(ds["uid"])


# ---- the CLI -----------------------------------------------------------------------------------


def resolve_cli(argv: Sequence[str]) -> click.Command:
    """The click command ``coinpilot <argv>`` runs; fails unless the command and its options exist.

    ``run <service>`` must name one of ``coinpilot.runtime.SERVICES`` or ``all``.
    """
    command: click.Command = cli
    words = list(argv)
    path: list[str] = []
    while isinstance(command, click.Group):
        assert words, f"`coinpilot {' '.join(path)}` needs a subcommand"
        name = words.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`coinpilot {' '.join([*path, name])}`: no such command"
        path.append(name)
        command = sub
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in words:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in options, f"`coinpilot {' '.join(path)}` has no option {option}"
    if path == ["run"]:
        positional = [w for w in words if not w.startswith("-")]
        assert positional and positional[0] in (*SERVICES, "all"), (
            f"`coinpilot run {' '.join(words)}`: not one of {', '.join(SERVICES)} or all"
        )
    return command


def coinpilot_invocations(shell: str) -> list[list[str]]:
    """Every ``coinpilot ...`` command in a shell line (split on &&, ;, |), as argv after 'coinpilot'."""
    found: list[list[str]] = []
    for part in re.split(r"&&|;|\|\|?", shell):
        words = shlex.split(part.replace("\\\n", " "), comments=False)
        if words and words[0] == "env":  # `env NAME=value ... coinpilot ...`
            words = words[1:]
            while words and "=" in words[0]:
                words = words[1:]
        if words and words[0] == "coinpilot":
            found.append(words[1:])
    return found
