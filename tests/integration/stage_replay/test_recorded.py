"""A past run's messages read back from JetStream: only that run's, within the event-time range,
in the order the server stored them; a subject with nothing on it reads as empty at once."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import nats
import pytest

from apps.stage_replay.recorded import IncompleteRead, check_aged_out, read_run
from coinpilot.bus import ensure_streams
from coinpilot.bus import headers as h
from coinpilot.bus.publisher import Bus
from coinpilot.contracts import DeadLetter, HourlyCandle, RiskAlert
from coinpilot.contracts.enums import AlertLevel, AlertType

pytestmark = pytest.mark.nats
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def hour(symbol: str, k: int) -> HourlyCandle:
    price = Decimal(100 + k)
    return HourlyCandle(
        ts_event=T0 + timedelta(hours=k + 1),
        symbol=symbol,
        ts_open=T0 + timedelta(hours=k),
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(1),
        minute_count=60,
    )


async def test_a_runs_messages_come_back_in_stored_order_and_only_that_run(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        bus = Bus(js, "operator")
        mine, other = f"rec-{uuid.uuid4().hex[:8]}", f"rec-{uuid.uuid4().hex[:8]}"
        alert = RiskAlert(ts_event=T0 + timedelta(hours=2, minutes=30), type=AlertType.COOLDOWN,
                          level=AlertLevel.WARNING, message="three losses")  # fmt: skip
        await bus.publish(hour("KRW-BTC", 0), run_id=mine)
        await bus.publish(hour("KRW-BTC", 0), run_id=other)
        await bus.publish(hour("KRW-ETH", 1), run_id=mine)
        await bus.publish(alert, run_id=mine)
        await bus.publish(hour("KRW-BTC", 2), run_id=mine)

        found = await read_run(js, mine, ("candles.1h.*", "risk.alerts"))
        assert [r.message for r in found] == [
            hour("KRW-BTC", 0),
            hour("KRW-ETH", 1),
            alert,
            hour("KRW-BTC", 2),
        ]
        assert [r.order_key() for r in found] == sorted(r.order_key() for r in found)

        window = await read_run(
            js, mine, ("candles.1h.*",), start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3)
        )
        assert [r.message for r in window] == [hour("KRW-ETH", 1)]
        assert await read_run(js, mine, ("fills.*",)) == []
        assert await read_run(js, f"none-{uuid.uuid4().hex}", ("candles.1h.*",)) == []
    finally:
        await nc.close()


async def test_what_the_run_refused_or_cannot_decode_stays_out_and_is_counted(nats_url: str) -> None:
    """A forged hourly candle the risk service dead-lettered in the run is no input to a risk
    replay (it still is to a stage that took it), and a body that is not its subject's contract is
    left out; both are counted."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        bus = Bus(js, "operator")
        run_id = f"rec-{uuid.uuid4().hex[:8]}"
        await bus.publish(hour("KRW-BTC", 0), run_id=run_id)
        forged = hour("KRW-BTC", 1)
        ack = await js.publish(forged.subject(), forged.to_json(), headers={h.RUN_ID: run_id})
        await bus.publish(hour("KRW-BTC", 2), run_id=run_id)
        await js.publish("candles.1h.KRW-BTC", b'{"not": "a candle"}', headers={h.RUN_ID: run_id})
        letter = DeadLetter(
            ts_event=forged.ts_event,
            service="risk",
            subject_original=forged.subject(),
            reason="permanent: RefusedMessage: FORGED",
            deliveries=1,
            body=forged.to_json().decode(),
            stream=ack.stream,
            stream_sequence=ack.seq,
        )
        await bus.publish(letter, run_id=run_id)

        skipped: Counter[str] = Counter()
        for_risk = await read_run(js, run_id, ("candles.1h.*",), refused_by=("risk",), skipped=skipped)
        assert [r.message for r in for_risk] == [hour("KRW-BTC", 0), hour("KRW-BTC", 2)]
        assert skipped == Counter({"refused by risk": 1, "undecodable": 1})
        for_agent = await read_run(js, run_id, ("candles.1h.*",), refused_by=("agent",))
        assert [r.message for r in for_agent] == [hour("KRW-BTC", 0), forged, hour("KRW-BTC", 2)]
    finally:
        await nc.close()


async def test_a_read_that_stops_short_of_messages_still_stored_is_an_error(nats_url: str) -> None:
    """When delivery stops before every counted message came (NATS away mid-read), the read fails
    rather than hand a replay part of a run; messages that aged out meanwhile only shorten it."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        symbol = f"KRW-T{uuid.uuid4().hex[:6].upper()}"
        await Bus(js, "operator").publish(hour(symbol, 0), run_id="short")
        pattern = f"candles.1h.{symbol}"
        with pytest.raises(IncompleteRead, match=f"read 0 of the 1 messages on {pattern}"):
            await check_aged_out(js, "CANDLES", pattern, 0, 1)
        await check_aged_out(js, "CANDLES", pattern, 0, 2)  # one of two aged out: nothing to refuse
    finally:
        await nc.close()
