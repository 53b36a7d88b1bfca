"""The diff of a replay that re-ran the pipeline, pure: the stage picks the rows, the outputs are
compared in a stable order whatever order the runs stored them in."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner

from apps.cli.main import main
from apps.stage_replay.diff import BYTES, NUMBERS, without_trailing_zeros
from apps.stage_replay.pipeline_diff import loop_outputs, pipeline_diff
from coinpilot.contracts import OrderRejected, RejectReason, RejectStage
from tests.unit.executor.factories import T0, buy_order


def refused(order: object, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts_event=order.ts_event, order_id=order.order_id, symbol=order.symbol,  # type: ignore[attr-defined]
                         side=order.side, stage=RejectStage.EXECUTOR, reason=reason,  # type: ignore[attr-defined]
                         message=f"{reason}")  # fmt: skip


def test_the_executor_stage_rows_are_its_answer_to_every_order_either_run_approved() -> None:
    first = buy_order("100", "40000")
    second = buy_order("101", "40000", symbol="KRW-ETH", at=T0 + timedelta(minutes=3))
    original = [first, refused(first, RejectReason.INSUFFICIENT_BALANCE)]
    new = [first, second, refused(second, RejectReason.PRICE_OUT_OF_BAND)]
    diff = pipeline_diff("executor", original, new, label="executor", original_run="a", replay_run="b")
    assert [(r.order_id, r.original.label, r.new.label) for r in diff.rows] == [
        (first.order_id, "REJECTED INSUFFICIENT_BALANCE", "NONE"),
        (second.order_id, "NONE", "REJECTED PRICE_OUT_OF_BAND"),
    ]
    assert diff.ledgers is not None and diff.ledgers[0] == diff.ledgers[1]  # no fill on either side


def test_outputs_stored_in_another_order_are_the_same_outputs() -> None:
    first = buy_order("100", "40000")
    second = buy_order("101", "40000", symbol="KRW-ETH")
    answers = [
        refused(first, RejectReason.INSUFFICIENT_BALANCE),
        refused(second, RejectReason.PRICE_OUT_OF_BAND),
    ]
    one = pipeline_diff("risk", answers, answers[::-1], label="loop", original_run="a", replay_run="b")
    assert one.identical_outputs and one.first_difference is None
    other = pipeline_diff("risk", answers, answers[:1], label="loop", original_run="a", replay_run="b")
    assert not other.identical_outputs and other.first_difference is not None
    assert loop_outputs(answers) == loop_outputs(answers[::-1]) == answers


def test_a_replay_into_a_nats_refuses_overrides_it_cannot_hand_to_deployed_services() -> None:
    into = ["--into", "nats://127.0.0.1:1", "--set", "COINPILOT_EXECUTOR_FEE_RATE=0"]
    result = CliRunner().invoke(main, ["replay-stage", "--run-id", "r", "--stage", "risk", *into])
    assert result.exit_code == 2 and "cannot go with --into" in result.output and "--set" in result.output


def test_decimals_read_back_padded_compare_equal_as_numbers_only() -> None:
    text = b'{"p":"26775.0","q":"1.50000000","t":"15:16Z","c":"x 1774.180 >= 0.985"}'
    assert without_trailing_zeros(text) == b'{"p":"26775","q":"1.5","t":"15:16Z","c":"x 1774.18 >= 0.985"}'
    kept = b'"10.01" "100" "2023-03-27T15:16:00Z"'
    assert without_trailing_zeros(kept) == kept
    order, padded = buy_order("26775.0", "40000"), buy_order("26775.00000000", "40000.00000000")
    runs = {"label": "x", "original_run": "a", "replay_run": "b"}
    exact = pipeline_diff("executor", [order], [padded], **runs)
    loose = pipeline_diff("executor", [order], [padded], **runs, identity=NUMBERS)
    assert not exact.identical_outputs and exact.identity == BYTES
    assert loose.identical_outputs and "as numbers" in loose.lines()[1]
