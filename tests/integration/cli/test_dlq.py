"""`coinpilot dlq` against a real nats-server: a dead letter whose cause is fixed is redriven and
processed exactly once, a second redrive is harmless, a truncated letter is redriven from its
original stream message (or refused once that is gone), and list/show print what an operator needs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import nats
import pytest
from click.testing import CliRunner

from apps.cli.dlq import REDRIVE_HEADER, Selection, read_letters, redrive, subject_matches
from apps.cli.main import main
from coinpilot.bus import Bus, Consumer, Delivery, ensure_streams, parser_for
from coinpilot.contracts import Contract, MinuteCandle
from coinpilot.errors import RefusedMessage
from coinpilot.runtime.pull import PullLoop
from tests.support.messages import candle
from tests.support.servers import wait_for

pytestmark = pytest.mark.nats


@pytest.fixture
async def js(nats_url: str):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.close()


async def idle(js, durable: str) -> bool:
    info = await js.consumer_info("CANDLES", durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_dead_letter_redriven_after_its_fix_is_processed_exactly_once(js) -> None:
    symbol, service = "KRW-DLQFIX", "dlqfix"
    bus = Bus(js, service)
    fixed = False
    processed: list[tuple[int, dict[str, str]]] = []

    async def handle(d: Delivery[MinuteCandle]) -> Sequence[Contract]:
        if d.message.ts_open.minute == 0 and not fixed:
            raise RefusedMessage("NOT_READY", "the row this candle needs is missing")
        processed.append((d.message.ts_open.minute, dict(d.headers)))
        return []

    subject = f"candles.1m.{symbol}"
    await bus.publish(candle(0, symbol=symbol), run_id="replay-dlq", trace_id="trace-dlq")
    await bus.publish(candle(1, symbol=symbol), run_id="replay-dlq")
    consumer = Consumer(subject, f"d-{symbol}", handle, parser_for(MinuteCandle))
    loop = PullLoop(js._nc, js, bus, consumer, batch_size=16, max_deliver=5, ack_wait=30.0)
    await loop.start()
    try:
        await wait_for(lambda: [m for m, _ in processed] == [1], timeout=20)
        [entry] = await read_letters(js, Selection(service=service))
        assert (
            entry.letter.reason
            == "permanent: RefusedMessage: NOT_READY: the row this candle needs is missing"
        )

        fixed = True
        [first] = await redrive(js, [entry])
        assert first.outcome == "redriven" and first.subject == subject
        await wait_for(lambda: len(processed) == 2, timeout=20)

        [second] = await redrive(js, [entry])  # an operator runs it again
        assert second.outcome == "duplicate"
        await wait_for(lambda: idle(js, f"d-{symbol}"), timeout=20)
    finally:
        await loop.stop()

    assert [m for m, _ in processed] == [1, 0], "processed exactly once"
    headers = processed[1][1]
    assert headers[REDRIVE_HEADER] == str(entry.seq)
    assert headers["Nats-Msg-Id"] == f"replay-dlq:{candle(0, symbol=symbol).msg_id()}|redrive:{entry.seq}"
    assert headers["Coinpilot-Run-Id"] == "replay-dlq" and headers["Coinpilot-Trace-Id"] == "trace-dlq"


async def test_a_truncated_letter_is_redriven_from_its_original_or_refused_once_it_is_gone(js) -> None:
    subject, service = "candles.1m.KRW-DLQBIG", "dlqbig"
    body = b"\xfe" * (js._nc.max_payload - 8 * 1024)
    ack = await js.publish(subject, body, headers={"Nats-Msg-Id": "big-1", "Coinpilot-Run-Id": "live"})
    letter = await Bus(js, service).dead_letter(
        subject=subject,
        body=body,
        headers={"Nats-Msg-Id": "big-1", "Coinpilot-Run-Id": "live"},
        reason="contract: not JSON",
        deliveries=1,
        stream_sequence=ack.seq,
        stream="CANDLES",
    )
    assert letter.truncated
    [entry] = await read_letters(js, Selection(service=service))

    [result] = await redrive(js, [entry])
    assert result.outcome == "redriven"
    again = await js.get_last_msg("CANDLES", subject)
    assert again.data == body, "the whole original, not the letter's prefix"
    assert again.headers["Nats-Msg-Id"] == f"big-1|redrive:{entry.seq}"

    await js.delete_msg("CANDLES", ack.seq)
    [refused] = await redrive(js, [entry])
    assert refused.outcome == "refused"
    assert refused.detail == f"truncated, and the original is gone from stream CANDLES sequence {ack.seq}"


def test_list_show_and_redrive_commands(nats_url: str) -> None:
    subject, service = "candles.1m.KRW-DLQCLI", "dlqcli"

    async def dead_letter() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_streams(js)
        body = candle(5, symbol="KRW-DLQCLI").to_json()
        ack = await js.publish(subject, body, headers={"Nats-Msg-Id": "cli-1"})
        await Bus(js, service).dead_letter(
            subject=subject,
            body=body,
            headers={"Nats-Msg-Id": "cli-1", "X-Why": "test"},
            reason="permanent: RefusedMessage: OHLC: low above close",
            deliveries=1,
            stream_sequence=ack.seq,
            stream="CANDLES",
        )
        await nc.close()

    asyncio.run(dead_letter())
    runner = CliRunner(env={"COINPILOT_NATS_URL": nats_url})

    listed = runner.invoke(main, ["dlq", "list", "--service", service, "--subject", "candles.1m.*"])
    assert listed.exit_code == 0, listed.output
    line = listed.output.splitlines()[0]
    assert service in line and subject in line and "OHLC: low above close" in line
    seq = line.split()[0]

    as_json = runner.invoke(main, ["dlq", "list", "--service", service, "--json"])
    row = json.loads(as_json.output.splitlines()[0])
    assert row["seq"] == int(seq) and row["subject_original"] == subject and row["headers"]["X-Why"] == "test"

    none = runner.invoke(main, ["dlq", "list", "--service", service, "--subject", "orders.>"])
    assert none.output.strip() == "0 dead letter(s)"

    shown = runner.invoke(main, ["dlq", "show", seq])
    assert shown.exit_code == 0, shown.output
    assert "reason:     permanent: RefusedMessage: OHLC: low above close" in shown.output
    assert "X-Why: test" in shown.output and '"symbol": "KRW-DLQCLI"' in shown.output, (
        "body decoded, indented"
    )

    assert runner.invoke(main, ["dlq", "show", "999999"]).exit_code == 1
    assert runner.invoke(main, ["dlq", "redrive"]).exit_code == 2, "nothing named: refused, not everything"

    redriven = runner.invoke(main, ["dlq", "redrive", seq])
    assert redriven.exit_code == 0, redriven.output
    assert "redriven" in redriven.output and "1 redriven, 0 refused" in redriven.output


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("candles.1m.*", "candles.1m.KRW-BTC", True),
        ("candles.>", "candles.1m.KRW-BTC", True),
        ("candles.>", "candles", False),
        ("candles.1m.*", "candles.1h.KRW-BTC", False),
        ("candles.1m.*", "candles.1m.KRW-BTC.x", False),
        ("fills.KRW-BTC", "fills.KRW-BTC", True),
    ],
)
def test_subject_filters_use_nats_wildcards(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected
