"""The stage replay's diff, pure: verdicts per signal, counts by reason, the renderings, and the
command's refusal of a replay it cannot run."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from apps.cli.main import main
from apps.stage_replay.diff import StageDiff, Verdict, diff_rows, verdicts_of
from coinpilot.contracts import OrderRejected, RejectReason, RejectStage, Side
from tests.unit.risk.factories import entry, exit_signal

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def rejected(order_id: str, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts_event=T0, order_id=order_id, symbol="KRW-BTC", side=Side.BUY,
                         stage=RejectStage.RISK, reason=reason, message=f"{reason} here")  # fmt: skip


def test_each_signal_gets_the_verdict_each_run_gave_it() -> None:
    buy, sell = entry(), exit_signal(at=T0.replace(hour=13))
    buy_id = "KRW-BTC:2026-03-02T12:00Z:buy"
    original = {buy_id: Verdict("PROPOSED", amount="40000")}
    new = verdicts_of([rejected(buy_id, RejectReason.MAX_DAILY_TRADES)])
    rows = diff_rows([buy, sell], original, new)
    assert [r.order_id for r in rows] == [buy_id, "KRW-BTC:2026-03-02T13:00Z:sell"]
    assert rows[0].changed and rows[0].new.label == "REJECTED MAX_DAILY_TRADES"
    assert not rows[1].changed and rows[1].original.label == "NONE"
    diff = StageDiff("risk", "run-a", "run-b", {"max_daily_trades": "1"}, rows)
    assert diff.counts() == {
        "original": {"NONE": 1, "PROPOSED": 1},
        "new": {"NONE": 1, "REJECTED MAX_DAILY_TRADES": 1},
    }
    data = json.loads(diff.to_json())
    assert data["changed"] == 1 and data["rows"][0]["new"]["reason"] == "MAX_DAILY_TRADES"
    assert any("PROPOSED -> REJECTED MAX_DAILY_TRADES" in line for line in diff.lines())
    page = diff.to_html()
    assert "<tr class='changed'>" in page and "MAX_DAILY_TRADES here" in page
    assert Decimal(data["rows"][0]["original"]["amount"]) == Decimal(40000)


def test_the_command_refuses_a_strategy_replay_without_the_loop() -> None:
    result = CliRunner().invoke(main, ["replay-stage", "--run-id", "r", "--stage", "strategy"])
    assert result.exit_code == 2 and "--through executor" in result.output


def test_the_command_gives_up_on_a_nats_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-shot command says the bus is away and exits, instead of retrying for ever as a service does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("COINPILOT_NATS_URL", f"nats://127.0.0.1:{port}")
    result = CliRunner().invoke(main, ["replay-stage", "--run-id", "r", "--stage", "risk"])
    assert result.exit_code == 1 and "did not answer" in result.output
