"""The shipped n8n workflows, checked structurally (§7.3 fixes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from services.notifier import payloads as p
from tests.unit.notifier.factories import ai_decision, buy_fill, daily_report, risk_alert

WORKFLOWS = Path(__file__).resolve().parents[3] / "infra" / "n8n" / "workflows"
PATHS = ("trade", "ai-decision", "risk", "daily-report")
# Fields the notifier sends for each workflow, plus the aliases the original workflows accepted.
SENT = {
    "trade": set(p.trade_payload(buy_fill())) | {"qty", "action"},
    "ai-decision": set(p.ai_decision_payload(ai_decision())),
    "risk": set(p.risk_payload(risk_alert())),
    "daily-report": set(p.daily_report_payload(daily_report())),
}


def load(path: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{path}.json").read_text())


def node(workflow: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [n for n in workflow["nodes"] if n["type"] == type_]


def test_there_is_exactly_one_workflow_per_endpoint() -> None:
    assert sorted(f.stem for f in WORKFLOWS.glob("*.json")) == sorted(PATHS)


@pytest.mark.parametrize("path", PATHS)
def test_every_node_is_reachable_from_the_webhook_and_every_link_lands_on_a_node(path: str) -> None:
    workflow = load(path)
    names = [n["name"] for n in workflow["nodes"]]
    assert len(names) == len(set(names))
    edges = {
        source: [link["node"] for output in spec["main"] for link in output]
        for source, spec in workflow["connections"].items()
    }
    assert set(edges) <= set(names)
    assert all(target in names for targets in edges.values() for target in targets)
    seen, todo = set(), ["Webhook"]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(edges.get(current, []))
    assert seen == set(names)


@pytest.mark.parametrize("path", PATHS)
def test_the_webhook_checks_the_secret_from_a_credential_and_answers_from_a_node(path: str) -> None:
    (hook,) = node(load(path), "n8n-nodes-base.webhook")
    assert hook["parameters"]["httpMethod"] == "POST"
    assert hook["parameters"]["path"] == path
    assert hook["parameters"]["responseMode"] == "responseNode"
    assert hook["parameters"]["authentication"] == "headerAuth"
    assert set(hook["credentials"]) == {"httpHeaderAuth"}


@pytest.mark.parametrize("path", PATHS)
def test_success_and_discord_failure_both_get_an_answer(path: str) -> None:
    workflow = load(path)
    (discord,) = node(workflow, "n8n-nodes-base.discord")
    assert discord["onError"] == "continueErrorOutput"
    assert set(discord["credentials"]) == {"discordWebhookApi"}
    ok, failed = workflow["connections"][discord["name"]]["main"]
    codes = {
        n["name"]: n["parameters"]["options"]["responseCode"]
        for n in node(workflow, "n8n-nodes-base.respondToWebhook")
    }
    assert codes[ok[0]["node"]] == 200
    assert codes[failed[0]["node"]] >= 500


@pytest.mark.parametrize("path", PATHS)
def test_no_workflow_reads_the_environment(path: str) -> None:
    assert "$env" not in (WORKFLOWS / f"{path}.json").read_text()


@pytest.mark.parametrize("path", PATHS)
def test_every_field_is_read_under_body_first_and_is_one_the_notifier_sends(path: str) -> None:
    (code,) = node(load(path), "n8n-nodes-base.code")
    js = code["parameters"]["jsCode"]
    assert "const body = $json.body ?? {};" in js
    assert "const field = (name, fallback) => body[name] ?? $json[name] ?? fallback;" in js
    # no other way into the item: every $json access is the body or the helper's fallback
    assert set(re.findall(r"\$json(\.\w+|\[\w+\])", js)) == {".body", "[name]"}
    read = set(re.findall(r"field\('(\w+)'", js))
    assert read and read <= SENT[path]


@pytest.mark.parametrize(
    ("path", "title", "colours"),
    [
        ("trade", "`Trade Executed: ${side}`", {5763719, 15548997, 9807270}),
        ("ai-decision", "`AI Decision: ${decision}`", {5763719, 15548997, 9807270}),
        ("risk", "`⚠️ Risk Alert: ${type}`", {15158332, 16776960}),
        ("daily-report", "text(field('title')", {3447003}),
    ],
)
def test_embeds_keep_the_original_titles_and_colours(path: str, title: str, colours: set[int]) -> None:
    (code,) = node(load(path), "n8n-nodes-base.code")
    js = code["parameters"]["jsCode"]
    assert title in js
    assert {int(c) for c in re.findall(r"\b\d{7,8}\b", js)} == colours
