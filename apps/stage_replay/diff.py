"""The diff of a stage replay, pure: per input, what the original run decided and what the replay
decided, counts by reason, and the two ledgers' figures; rendered for a terminal, as JSON and HTML.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from coinpilot.contracts import (
    AiDecision,
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    Side,
    order_id_for,
)

NONE = "NONE"
BYTES = "byte for byte"
NUMBERS = "as numbers (decimals read back from market_data without the zeros it pads them with)"
_TRAILING_ZEROS = re.compile(rb"(?<![\w.])(\d+)\.(\d*?)0+(?![\d.])")


def without_trailing_zeros(text: bytes) -> bytes:
    """``text`` with every decimal number's trailing zeros dropped (26775.0 -> 26775, 1.500 -> 1.5):
    what two messages built from the same numbers in different paddings still have in common."""
    return _TRAILING_ZEROS.sub(lambda m: m[1] + (b"." + m[2] if m[2] else b""), text)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a stage answered to one input: PROPOSED, APPROVED, REJECTED or NONE (nothing sent)."""

    outcome: str
    reason: str | None = None
    amount: str | None = None
    message: str | None = None

    @property
    def label(self) -> str:
        return self.outcome if self.reason is None else f"{self.outcome} {self.reason}"


@dataclass(frozen=True, slots=True)
class DiffRow:
    order_id: str
    symbol: str
    ts_event: str
    side: str
    original: Verdict
    new: Verdict

    @property
    def changed(self) -> bool:
        return self.original != self.new


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """A ledger in a few figures (the same function for both sides)."""

    fills: int
    buys: int
    sells: int
    realized_pnl: str
    fees: str
    final_balance: str | None


@dataclass
class StageDiff:
    stage: str
    original_run: str
    replay_run: str
    overrides: dict[str, str]
    rows: list[DiffRow] = field(default_factory=list)
    identical_outputs: bool = False
    """Every output of the replay equals the original's, as ``identity`` says."""
    ledgers: tuple[LedgerFigures, LedgerFigures] | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    """Recorded messages left out, by why: undecodable, or refused by a service in the run."""
    identity: str = BYTES
    """How outputs were compared: byte for byte (as JSON), or as numbers where inputs came from
    ``market_data``, which stores decimals padded (NUMERIC(20,8)) and so not as the run had them."""
    first_difference: str | None = None
    """Where the outputs first differ, when they do: the original and the replay's message."""

    @property
    def changed(self) -> list[DiffRow]:
        return [r for r in self.rows if r.changed]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "original": dict(sorted(Counter(r.original.label for r in self.rows).items())),
            "new": dict(sorted(Counter(r.new.label for r in self.rows).items())),
        }

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "stage": self.stage,
            "original_run": self.original_run,
            "replay_run": self.replay_run,
            "overrides": self.overrides,
            "inputs": len(self.rows),
            "changed": len(self.changed),
            "identical_outputs": self.identical_outputs,
            "identity": self.identity,
            "counts": self.counts(),
            "skipped": self.skipped,
            "first_difference": self.first_difference,
            "rows": [asdict(r) for r in self.rows],
        }
        if self.ledgers is not None:
            data["ledgers"] = {"original": asdict(self.ledgers[0]), "new": asdict(self.ledgers[1])}
        return json.dumps(data, indent=2, sort_keys=True)

    def lines(self) -> list[str]:
        out = [
            f"{self.stage} replay of run {self.original_run!r} as {self.replay_run!r}"
            + (f" with {', '.join(f'{k}={v}' for k, v in self.overrides.items())}" if self.overrides else ""),
            f"  {len(self.rows)} inputs, {len(self.changed)} decided differently"
            + (f"; outputs identical to the original, {self.identity}" if self.identical_outputs else ""),
        ]
        if self.skipped:
            out.append(
                "  left out of the recording: " + ", ".join(f"{n} {why}" for why, n in self.skipped.items())
            )
        counts = self.counts()
        for label in sorted(set(counts["original"]) | set(counts["new"])):
            out.append(
                f"  {label:<40} {counts['original'].get(label, 0):>6} -> {counts['new'].get(label, 0):>6}"
            )
        for row in self.changed:
            out.append(
                f"  {row.ts_event} {row.symbol} {row.side}: {row.original.label} -> {row.new.label}"
                + (f" ({row.new.message})" if row.new.message else "")
            )
        if self.ledgers is not None:
            before, after = self.ledgers
            out.append(f"  {'ledger':<16} {'original':>18} {'replay':>18}")
            for name in ("fills", "buys", "sells", "realized_pnl", "fees", "final_balance"):
                out.append(f"  {name:<16} {getattr(before, name)!s:>18} {getattr(after, name)!s:>18}")
        return out

    def to_html(self) -> str:
        def cell(value: object) -> str:
            return f"<td>{html.escape('' if value is None else str(value))}</td>"

        rows = "".join(
            f"<tr class='{'changed' if r.changed else ''}'>"
            + "".join(cell(v) for v in (r.ts_event, r.symbol, r.side, r.order_id))
            + "".join(cell(v) for v in (r.original.label, r.original.amount, r.original.message))
            + "".join(cell(v) for v in (r.new.label, r.new.amount, r.new.message))
            + "</tr>"
            for r in self.rows
        )
        ledgers = ""
        if self.ledgers is not None:
            before, after = self.ledgers
            ledgers = (
                "<h2>Ledgers</h2><table><tr><th></th><th>original</th><th>replay</th></tr>"
                + "".join(
                    f"<tr><th>{name}</th>{cell(getattr(before, name))}{cell(getattr(after, name))}</tr>"
                    for name in ("fills", "buys", "sells", "realized_pnl", "fees", "final_balance")
                )
                + "</table>"
            )
        summary = html.escape("\n".join(self.lines()[:2]))
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>CoinPilot stage replay</title>"
            "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
            "table{border-collapse:collapse}.changed{background:#fff3c4}</style></head><body>"
            f"<h1>{html.escape(self.stage)} replay</h1><pre>{summary}</pre>"
            "<table><tr><th>event time</th><th>symbol</th><th>side</th><th>order</th>"
            "<th>original</th><th>amount</th><th>message</th><th>replay</th><th>amount</th><th>message</th></tr>"
            f"{rows}</table>{ledgers}</body></html>"
        )


def decision_verdict(decision: AiDecision | None) -> Verdict:
    """The agent's answer to one proposal."""
    if decision is None:
        return Verdict(NONE)
    reason = None if decision.reason_code is None else str(decision.reason_code)
    return Verdict(str(decision.decision), reason, message=decision.reasoning)


def execution_verdict(message: Fill | OrderRejected | None) -> Verdict:
    """The executor's answer to one approved order."""
    if message is None:
        return Verdict(NONE)
    if isinstance(message, Fill):
        filled = f"{message.quantity} at {message.fill_price}, fee {message.fee}"
        return Verdict("FILLED", amount=str(message.amount), message=filled)
    return Verdict("REJECTED", str(message.reason), message=message.message)


def order_row(order: OrderProposed | OrderApproved, original: Verdict, new: Verdict) -> DiffRow:
    """One order's row: what the original run and the replay answered to it."""
    return DiffRow(order.order_id, order.symbol, order.ts_event.isoformat(), str(order.side), original, new)


def signal_order_id(signal: EntrySignal | ExitSignal) -> str:
    side = Side.BUY if isinstance(signal, EntrySignal) else Side.SELL
    return order_id_for(signal.symbol, signal.ts_event, side)


def verdicts_of(outputs: Iterable[Contract]) -> dict[str, Verdict]:
    """Risk's answer to each order id among a stage's outputs."""
    found: dict[str, Verdict] = {}
    for m in outputs:
        if isinstance(m, OrderProposed):
            found[m.order_id] = Verdict("PROPOSED", amount=str(m.amount))
        elif isinstance(m, OrderApproved):
            found[m.order_id] = Verdict("APPROVED", amount=None if m.amount is None else str(m.amount))
        elif isinstance(m, OrderRejected):
            found[m.order_id] = Verdict("REJECTED", str(m.reason), message=m.message)
    return found


def diff_rows(
    signals: Sequence[EntrySignal | ExitSignal], original: Mapping[str, Verdict], new: Mapping[str, Verdict]
) -> list[DiffRow]:
    rows = []
    for signal in signals:
        key = signal_order_id(signal)
        rows.append(
            DiffRow(
                key,
                signal.symbol,
                signal.ts_event.isoformat(),
                "BUY" if isinstance(signal, EntrySignal) else "SELL",
                original.get(key, Verdict(NONE)),
                new.get(key, Verdict(NONE)),
            )
        )
    return rows


def ledger_figures(fills: Sequence[Fill]) -> LedgerFigures:
    ordered = sorted(fills, key=lambda f: (f.ts_event, f.order_id))
    pnl = sum((f.realized_pnl or Decimal(0) for f in ordered), Decimal(0))
    fees = sum((f.fee for f in ordered), Decimal(0))
    return LedgerFigures(
        fills=len(ordered),
        buys=sum(f.side is Side.BUY for f in ordered),
        sells=sum(f.side is Side.SELL for f in ordered),
        realized_pnl=f"{pnl:.8f}",
        fees=f"{fees:.8f}",
        final_balance=f"{ordered[-1].balance_after:.8f}" if ordered else None,
    )


def first_difference(original: Sequence[bytes], new: Sequence[bytes]) -> str | None:
    """The first output that differs (or is missing on one side), both sides shown; None when equal."""
    for k in range(max(len(original), len(new))):
        before = original[k].decode() if k < len(original) else "(none)"
        after = new[k].decode() if k < len(new) else "(none)"
        if before != after:
            return f"output {k}: original {before[:600]} / replay {after[:600]}"
    return None
