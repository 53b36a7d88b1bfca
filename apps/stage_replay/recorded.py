"""A past run's messages as JetStream recorded them: read back by run id, subject and event time.

Every CoinPilot message carries its run id in ``Coinpilot-Run-Id``; the streams keep them for
their retention (``coinpilot.bus.streams``). A stage replay reads the inputs of one stage (and
the outputs it is compared with) from here, in the order they were stored: the server's timestamp
of each message, which in a lockstep run is the causal order of each candle's chain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from coinpilot.bus import headers as h
from coinpilot.bus.streams import stream_for_subject
from coinpilot.contracts import (
    AiDecision,
    Contract,
    DeadLetter,
    EntrySignal,
    ExitSignal,
    Fill,
    HourlyCandle,
    IndicatorSnapshot,
    MinuteCandle,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RiskAlert,
)
from coinpilot.errors import ContractError

#: Subject prefix -> the contract it carries (the chain of a run, candles to fills).
CONTRACTS: tuple[tuple[str, type[Contract]], ...] = (
    ("candles.1m.", MinuteCandle),
    ("candles.1h.", HourlyCandle),
    ("indicators.1m.", IndicatorSnapshot),
    ("signals.entry.", EntrySignal),
    ("signals.exit.", ExitSignal),
    ("orders.proposed.", OrderProposed),
    ("orders.approved.", OrderApproved),
    ("orders.rejected.", OrderRejected),
    ("ai.decisions.", AiDecision),
    ("fills.", Fill),
    ("risk.alerts", RiskAlert),
    ("dlq.", DeadLetter),
)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One stored message of the run: where and when it was stored, and what it says."""

    subject: str
    stream_seq: int
    stored_at: datetime
    message: Contract

    def order_key(self) -> tuple[datetime, int]:
        return self.stored_at, self.stream_seq


def contract_for(subject: str) -> type[Contract] | None:
    for prefix, contract in CONTRACTS:
        if subject.startswith(prefix):
            return contract
    return None


async def read_run(
    js: JetStreamContext,
    run_id: str,
    subjects: Iterable[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    refused_by: Iterable[str] = (),
    skipped: Counter[str] | None = None,
) -> list[Recorded]:
    """Every message of ``run_id`` on ``subjects`` (patterns), with event time in ``[start, end)``,
    in the order the server stored them. A subject no stream holds any more reads as empty.

    Untrusted input stays out as it did in the run: a body that is not its subject's contract is
    left out (counted in ``skipped`` as ``undecodable``), and so is every message a service of
    ``refused_by`` dead-lettered in the run (a forged fill risk refused is no input to risk's
    replay; counted as ``refused by <service>``).
    """
    tally: Counter[str] = Counter() if skipped is None else skipped
    refused: dict[tuple[str, int], str] = {}
    for service in refused_by:
        for r in await _read_subject(js, run_id, f"dlq.{service}", None, None, tally):
            letter = r.message
            if isinstance(letter, DeadLetter) and letter.stream and letter.stream_sequence is not None:
                refused[(letter.stream, letter.stream_sequence)] = service
    found: list[Recorded] = []
    for pattern in subjects:
        for r in await _read_subject(js, run_id, pattern, start, end, tally):
            by = refused.get((stream_for_subject(r.subject).name, r.stream_seq))
            if by is None:
                found.append(r)
            else:
                tally[f"refused by {by}"] += 1
    found.sort(key=Recorded.order_key)
    return found


async def _read_subject(
    js: JetStreamContext,
    run_id: str,
    pattern: str,
    start: datetime | None,
    end: datetime | None,
    skipped: Counter[str],
) -> list[Recorded]:
    stream = stream_for_subject(pattern).name
    info = await js.stream_info(stream, subjects_filter=pattern)
    stored = sum((info.state.subjects or {}).values())
    if stored == 0:
        return []  # nothing on the subject: do not wait for a message that will not come
    sub = await js.subscribe(
        pattern, stream=stream, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    out: list[Recorded] = []
    read = 0
    try:
        for _ in range(stored):  # what the stream held when asked; later messages are not this read's
            try:
                msg = await sub.next_msg(timeout=10.0)
            except TimeoutError:
                await check_aged_out(js, stream, pattern, read, stored)
                break
            read += 1
            headers = h.of_message(msg.headers)
            contract = contract_for(msg.subject)
            if headers.get(h.RUN_ID) != run_id or contract is None:
                continue
            try:
                message = contract.from_json(msg.data)
            except ContractError:  # not the subject's contract (the run's consumers refused it too)
                skipped["undecodable"] += 1
                continue
            if (start is None or message.ts_event >= start) and (end is None or message.ts_event < end):
                meta = msg.metadata
                out.append(Recorded(msg.subject, meta.sequence.stream, meta.timestamp, message))
    finally:
        await sub.unsubscribe()
    return out


class IncompleteRead(RuntimeError):
    """The stream stopped delivering a subject's messages before all were read (and they are still
    there): a replay over part of a run would compare the wrong things, so it stops instead."""


async def check_aged_out(js: JetStreamContext, stream: str, pattern: str, read: int, stored: int) -> None:
    """Return when the unread messages aged out of the stream meanwhile (retention); else raise."""
    info = await js.stream_info(stream, subjects_filter=pattern)  # raises while NATS is away
    left = sum((info.state.subjects or {}).values())
    if left >= stored:
        raise IncompleteRead(f"read {read} of the {stored} messages on {pattern} in {stream}; stopped")
