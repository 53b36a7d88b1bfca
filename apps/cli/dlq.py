"""``coinpilot dlq list|show|redrive``: inspect dead letters and send chosen ones back.

Dead letters are ``DeadLetter`` messages on ``dlq.<service>`` in the DLQ stream, addressed here by
their DLQ stream sequence. A redrive publishes the original body on the original subject with the
original headers, except two:

* ``Nats-Msg-Id`` becomes ``<original id>|redrive:<dlq seq>``: the original id would be dropped by
  the stream's 2-hour duplicate window. Redriving the same letter again within that window is
  stored once (same id); later, the handlers' idempotency (unique keys, deterministic output
  ids) makes a second processing harmless.
* ``Coinpilot-Redrive: <dlq seq>`` says it is a redrive, and of which letter.

A truncated letter (its original was too large to copy whole) is redriven from the original
message in its stream, by sequence, or refused when the stream no longer holds it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from coinpilot.contracts import DeadLetter
    from coinpilot.settings import CommonSettings

DLQ_STREAM = "DLQ"
REDRIVE_HEADER = "Coinpilot-Redrive"
MSG_ID_HEADER = "Nats-Msg-Id"
READ_TIMEOUT_SECONDS = 5.0  # the longest wait for the next stored letter while listing


@dataclass(frozen=True, slots=True)
class Entry:
    """A dead letter and where it is stored."""

    seq: int
    stored_at: datetime | None
    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: of a service, of an original subject (NATS wildcards), since a time."""

    service: str | None = None
    subject: str | None = None
    since: datetime | None = None

    def matches(self, entry: Entry) -> bool:
        letter = entry.letter
        if self.service is not None and letter.service != self.service:
            return False
        if self.subject is not None and not subject_matches(self.subject, letter.subject_original):
            return False
        return self.since is None or entry.stored_at is None or entry.stored_at >= self.since

    @property
    def empty(self) -> bool:
        return self.service is None and self.subject is None and self.since is None


@dataclass(frozen=True, slots=True)
class Redriven:
    """What happened to one letter: ``redriven``, ``duplicate`` (already redriven within the
    duplicate window: stored once) or ``refused`` (``detail`` says why)."""

    seq: int
    outcome: str
    subject: str = ""
    detail: str = ""


class RedriveRefused(Exception):
    """A letter cannot be redriven (a truncated letter whose original is gone)."""


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))


# -- reading ---------------------------------------------------------------------------------------
async def read_letters(js: JetStreamContext, selection: Selection = Selection()) -> list[Entry]:
    """Every stored dead letter the selection matches, oldest first."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from coinpilot.contracts import DeadLetter
    from coinpilot.errors import ContractError

    subject = f"dlq.{selection.service}" if selection.service else "dlq.>"
    since = _utc(selection.since)
    config = (
        ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat())
        if since is not None
        else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    sub = await js.subscribe(subject, stream=DLQ_STREAM, ordered_consumer=True, config=config)
    entries: list[Entry] = []
    try:
        info = await sub.consumer_info()
        if info.num_pending + (info.delivered.consumer_seq if info.delivered else 0) == 0:
            return entries
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_TIMEOUT_SECONDS)
            except TimeoutError:
                break
            meta = msg.metadata
            try:
                letter = DeadLetter.from_json(msg.data)
            except ContractError:
                letter = None  # not a dead letter; nothing to show or redrive
            if letter is not None:
                entry = Entry(meta.sequence.stream, _utc(meta.timestamp), letter)
                if selection.matches(entry):
                    entries.append(entry)
            if meta.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return entries


async def get_letter(js: JetStreamContext, seq: int) -> Entry:
    """The dead letter at DLQ sequence ``seq``; :class:`click.ClickException` if there is none."""
    from nats.js.errors import NotFoundError

    from coinpilot.contracts import DeadLetter
    from coinpilot.errors import ContractError

    try:
        raw = await js.get_msg(DLQ_STREAM, seq)
    except NotFoundError:
        raise click.ClickException(f"no dead letter at DLQ sequence {seq}") from None
    try:
        letter = DeadLetter.from_json(raw.data or b"")
    except ContractError as exc:
        raise click.ClickException(f"DLQ sequence {seq} is not a dead letter: {exc}") from None
    stored_at = _utc(raw.time) if isinstance(raw.time, datetime) else None
    return Entry(seq, stored_at, letter)


# -- redriving -------------------------------------------------------------------------------------
def redrive_headers(original: dict[str, str], seq: int, fallback_id: str) -> dict[str, str]:
    """The original headers with a fresh ``Nats-Msg-Id`` and the redrive header; JetStream's
    publish expectations (``Nats-Expected-*``) are dropped: they held for the first publish only."""
    headers = {k: v for k, v in original.items() if not k.startswith("Nats-Expected-")}
    headers[MSG_ID_HEADER] = f"{original.get(MSG_ID_HEADER) or fallback_id}|redrive:{seq}"
    headers[REDRIVE_HEADER] = str(seq)
    return headers


async def _original(js: JetStreamContext, entry: Entry) -> tuple[bytes, dict[str, str]]:
    """Body and headers to redrive: the letter's copy, or for a truncated letter the original
    message from its stream; raises :class:`RedriveRefused` when that is gone."""
    from nats.js.errors import NotFoundError

    from coinpilot.bus.dead_letters import decoded_body
    from coinpilot.bus.headers import of_message

    letter = entry.letter
    if not letter.truncated:
        return decoded_body(letter), dict(letter.headers)
    if letter.stream is None or letter.stream_sequence is None:
        raise RedriveRefused("truncated, and the letter does not say where the original is")
    where = f"stream {letter.stream} sequence {letter.stream_sequence}"
    try:
        raw = await js.get_msg(letter.stream, letter.stream_sequence)
    except NotFoundError:
        raise RedriveRefused(f"truncated, and the original is gone from {where}") from None
    if raw.subject != letter.subject_original:
        raise RedriveRefused(f"truncated, and {where} holds {raw.subject}, not {letter.subject_original}")
    return raw.data or b"", of_message(raw.headers)


async def redrive(js: JetStreamContext, entries: Sequence[Entry]) -> list[Redriven]:
    """Publish each letter's original back to its subject, in DLQ order."""
    results: list[Redriven] = []
    for entry in sorted(entries, key=lambda e: e.seq):
        letter = entry.letter
        try:
            body, headers = await _original(js, entry)
        except RedriveRefused as exc:
            results.append(Redriven(entry.seq, "refused", letter.subject_original, str(exc)))
            continue
        headers = redrive_headers(headers, entry.seq, letter.msg_id())
        ack = await js.publish(letter.subject_original, body, headers=headers)
        outcome = "duplicate" if ack.duplicate else "redriven"
        results.append(Redriven(entry.seq, outcome, letter.subject_original, f"{ack.stream} #{ack.seq}"))
    return results


# -- printing ----------------------------------------------------------------------------------------
def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def list_line(entry: Entry) -> str:
    letter = entry.letter
    when = entry.stored_at.strftime("%Y-%m-%d %H:%M:%S") if entry.stored_at else "?"
    mark = " [truncated]" if letter.truncated else ""
    reason = _short(letter.reason)
    return f"{entry.seq:>8}  {when}  {letter.service:<10} {letter.subject_original}  {reason}{mark}"


def as_json(entry: Entry) -> dict[str, Any]:
    stored_at = entry.stored_at.isoformat() if entry.stored_at else None
    return {"seq": entry.seq, "stored_at": stored_at, **entry.letter.model_dump(mode="json")}


def body_text(letter: DeadLetter) -> str:
    """The body as a reader wants it: indented JSON, text, or base64 of binary bytes."""
    from coinpilot.bus.dead_letters import decoded_body

    raw = decoded_body(letter)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(raw)} bytes, not UTF-8; base64>\n{base64.b64encode(raw).decode('ascii')}"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def show_text(entry: Entry) -> str:
    letter = entry.letter
    where = f" (stream {letter.stream} sequence {letter.stream_sequence})" if letter.stream_sequence else ""
    lines = [
        f"dead letter {entry.seq}  stored {entry.stored_at.isoformat() if entry.stored_at else '?'}",
        f"service:    {letter.service}",
        f"subject:    {letter.subject_original}{where}",
        f"deliveries: {letter.deliveries}",
        f"reason:     {letter.reason}",
    ]
    if letter.truncated:
        lines.append(
            f"truncated:  yes, the body below is a prefix; the original is in stream {letter.stream} "
            f"at sequence {letter.stream_sequence} (redrive takes it from there)"
        )
    lines.append("headers:")
    lines.extend(f"  {name}: {value}" for name, value in sorted(letter.headers.items()))
    lines.append("body:")
    lines.append(body_text(letter))
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------------
async def _with_js(settings: CommonSettings, work: Callable[[JetStreamContext], Any]) -> Any:
    from coinpilot.bus.connect import connect

    nc = await connect(settings, "coinpilot-dlq")
    try:
        return await work(nc.jetstream())
    finally:
        await nc.close()


def _settings() -> CommonSettings:
    from coinpilot.settings import CommonSettings

    return CommonSettings()


def _selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--since", type=click.DateTime(), help="Stored at or after this UTC time")(command)
    command = click.option("--subject", help="Original subject, NATS wildcards allowed (candles.1m.*)")(
        command
    )
    return click.option("--service", help="Dead letters of this service only")(command)


@click.group()
def dlq() -> None:
    """Dead letters: list them, show one, redrive chosen ones to their subject."""


@dlq.command("list")
@_selection_options
@click.option("--limit", type=int, default=50, show_default=True, help="The most recent this many")
@click.option("--json", "json_out", is_flag=True, help="One JSON object per line")
def list_command(
    service: str | None, subject: str | None, since: datetime | None, limit: int, json_out: bool
) -> None:
    """List dead letters, oldest first: DLQ sequence, time, service, subject, reason."""
    selection = Selection(service, subject, since)
    entries = asyncio.run(_with_js(_settings(), lambda js: read_letters(js, selection)))
    for entry in entries[-limit:] if limit > 0 else entries:
        click.echo(json.dumps(as_json(entry)) if json_out else list_line(entry))
    if not json_out:
        click.echo(
            f"{len(entries)} dead letter(s)" + (f", the last {limit} shown" if len(entries) > limit else "")
        )


@dlq.command("show")
@click.argument("seq", type=int)
@click.option("--json", "json_out", is_flag=True, help="The dead letter as JSON")
def show_command(seq: int, json_out: bool) -> None:
    """Show the dead letter at DLQ sequence SEQ: reason, headers, body decoded."""
    entry = asyncio.run(_with_js(_settings(), lambda js: get_letter(js, seq)))
    click.echo(json.dumps(as_json(entry), indent=2) if json_out else show_text(entry))


@dlq.command("redrive")
@click.argument("seqs", type=int, nargs=-1)
@_selection_options
@click.option("--all", "everything", is_flag=True, help="Every dead letter (no SEQ and no filter needed)")
def redrive_command(
    seqs: tuple[int, ...], service: str | None, subject: str | None, since: datetime | None, everything: bool
) -> None:
    """Send dead letters back to their original subject: those at DLQ sequences SEQS, or those the
    filters select. Fix the cause first; a redrive of the same letter again is harmless."""
    selection = Selection(service, subject, since)
    if not seqs and selection.empty and not everything:
        raise click.UsageError("name DLQ sequences, a filter (--service/--subject/--since) or --all")

    async def work(js: JetStreamContext) -> list[Redriven]:
        if seqs:
            entries = [await get_letter(js, seq) for seq in seqs]
            entries = [e for e in entries if selection.matches(e)]
        else:
            entries = await read_letters(js, selection)
        return await redrive(js, entries)

    results = asyncio.run(_with_js(_settings(), work))
    for r in results:
        click.echo(f"{r.seq:>8}  {r.outcome:<9} {r.subject}  {r.detail}".rstrip())
    refused = sum(r.outcome == "refused" for r in results)
    click.echo(f"{len(results) - refused} redriven, {refused} refused")
    if refused:
        raise SystemExit(1)
