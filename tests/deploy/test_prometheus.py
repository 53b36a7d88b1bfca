"""Prometheus: the scrape config and alert rules pass promtool; every alert is unit-tested both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.support import (
    INFRA,
    RULE_TESTS,
    RULES,
    require_binary,
    run_tool,
    unknown_labels,
    unknown_metrics,
)

PROMETHEUS_YML = INFRA / "prometheus" / "prometheus.yml"


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.yml"))


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = require_binary("promtool")
    result = run_tool([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    promtool = require_binary("promtool")
    files = rule_test_files()
    assert files, f"no promtool rule tests in {RULE_TESTS}"
    result = run_tool([promtool, "test", "rules", *map(str, files)], cwd=RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = require_binary("promtool")
    result = run_tool([promtool, "check", "config", "--syntax-only", str(PROMETHEUS_YML)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_server_binary_runs() -> None:
    """The lead's replay-and-scrape check needs a working `prometheus` (Debian package)."""
    prometheus = require_binary("prometheus")
    result = run_tool([prometheus, "--version"])
    assert result.returncode == 0, result.stderr
    assert "prometheus, version" in (result.stdout + result.stderr)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_waits_has_a_severity_and_explains_itself(rule: dict) -> None:
    assert rule.get("for"), f"{rule['alert']}: no `for` (a single bad scrape would page)"
    assert rule.get("labels", {}).get("severity") in {"critical", "warning"}
    annotations = rule.get("annotations", {})
    assert annotations.get("summary") and annotations.get("description")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_uses_only_catalogued_metrics_and_labels(rule: dict) -> None:
    assert unknown_metrics(rule["expr"]) == set()
    assert unknown_labels(rule["expr"]) == set()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_a_firing_and_a_silent_unit_test(rule: dict) -> None:
    fires = silent = 0
    for path in rule_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["alertname"] != rule["alert"]:
                    continue
                if check.get("exp_alerts"):
                    fires += 1
                else:
                    silent += 1
    assert fires >= 1, f"{rule['alert']}: no unit test where it fires"
    assert silent >= 1, f"{rule['alert']}: no unit test where it stays silent"


def test_the_alerts_cover_the_operational_risks() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "CoinPilotServiceDown",
        "CoinPilotConsumerLagGrowing",
        "CoinPilotDeadLetters",
        "CoinPilotNoCandles",
        "CoinPilotTradingHalted",
        "CoinPilotAiErrorStreak",
        "CoinPilotAiGlobalBlock",
        "CoinPilotNotificationFailures",
        "CoinPilotHighEndToEndLatency",
    } <= names


def test_a_broken_unit_test_expectation_makes_promtool_fail(tmp_path: Path) -> None:
    """Guards the guard: promtool really compares the expected alerts (not a test that cannot fail)."""
    promtool = require_binary("promtool")
    source = rule_test_files()[0]
    broken = yaml.safe_load(source.read_text())
    broken["rule_files"] = [str(RULES)]
    first = next(c for case in broken["tests"] for c in case["alert_rule_test"] if c.get("exp_alerts"))
    first["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    target = tmp_path / "broken.yml"
    target.write_text(yaml.safe_dump(broken))
    result = run_tool([promtool, "test", "rules", str(target)], cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
