"""``coinpilot trace``: candle -> indicators -> signal -> risk -> AI -> fill, for one trade or trace id.

A trace id is the id of the candle that started the chain (``candle:1m:KRW-BTC:2026-01-01T00:00Z``);
every message published because of that candle carries it in ``Coinpilot-Trace-Id``. A trade id
(the ``trading_history`` row id or its order id) is turned into its trace id through the ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import text

from apps.cli.tail import summarize
from coinpilot.bus import headers as h

STAGE_ORDER = ("candles.1m", "indicators.1m", "regime", "signals", "orders.proposed", "ai.decisions",
               "orders.approved", "orders.rejected", "fills", "risk.alerts", "dlq")  # fmt: skip


@dataclass
class TraceHop:
    subject: str
    headers: dict[str, str]
    data: dict[str, Any]

    def stage(self) -> int:
        for i, prefix in enumerate(STAGE_ORDER):
            if self.subject.startswith(prefix):
                return i
        return len(STAGE_ORDER)


@dataclass
class Trace:
    trace_id: str
    hops: list[TraceHop] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    live_state: list[str] = field(default_factory=list)
    """The run's kill switch and last reconciliation (issue 23), shown after the chain."""

    def lines(self) -> list[str]:
        out = [f"trace {self.trace_id}"]
        for hop in sorted(self.hops, key=TraceHop.stage):
            out.append("  " + summarize(hop.subject, json.dumps(hop.data).encode(), hop.headers))
            if hop.subject.startswith("ai.decisions") and hop.data.get("reasoning"):
                out.append(f"      reasoning: {hop.data['reasoning'][:500]}")
        for row in self.audits:
            out.append(f"  risk_audit: {row['violation_type']} {row.get('description') or ''}")
        for row in self.decisions:
            out.append(
                f"  agent_decisions: {row['decision']} confidence={row.get('confidence')} "
                f"model={row.get('model_used')}"
            )
        for row in self.ledger:
            out.append(
                f"  trading_history: {row['side']} {row['quantity']} {row['symbol']} @ {row['price']} "
                f"fee={row.get('fee')} order={row['order_id']} run={row.get('run_id')}"
            )
        if len(out) == 1:
            out.append("  nothing found for this id")
        out.extend(self.live_state)
        return out


def symbol_of_trace(trace_id: str) -> str | None:
    parts = trace_id.split(":")
    return parts[2] if len(parts) >= 3 and parts[0] == "candle" else None


# Subjects of each stream that can carry one symbol's chain; {s} is the symbol.
CHAIN_FILTERS: tuple[tuple[str, str], ...] = (
    ("CANDLES", "candles.*.{s}"),
    ("INDICATORS", "indicators.*.{s}"),
    ("INDICATORS", "regime.{s}"),
    ("SIGNALS", "signals.*.{s}"),
    ("ORDERS", "orders.*.{s}"),
    ("AI", "ai.*.{s}"),
    ("FILLS", "fills.{s}"),
    ("RISK", "risk.>"),
    ("DLQ", "dlq.>"),
)


async def collect_hops(js: JetStreamContext, trace_id: str, idle: float = 0.5) -> list[TraceHop]:
    """Scan the chain's subjects (only the trace's symbol) for messages carrying the trace id."""
    symbol = symbol_of_trace(trace_id) or "*"
    hops: list[TraceHop] = []
    for stream, pattern in CHAIN_FILTERS:
        try:
            sub = await js.subscribe(
                pattern.format(s=symbol),
                stream=stream,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
        except Exception:
            continue  # stream not provisioned on this server
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle)
                except TimeoutError:
                    break
                headers = h.of_message(msg.headers)
                if headers.get(h.TRACE_ID) == trace_id:
                    hops.append(TraceHop(msg.subject, headers, json.loads(msg.data)))
        finally:
            await sub.unsubscribe()
    return hops


async def ledger_rows(
    db: Any, ident: str, run_id: str | None = None
) -> tuple[str | None, list[dict[str, Any]]]:
    """Rows of trading_history for a trade id, order id or trace id (of one run when given), and
    the trace id they carry. Ids are deterministic, so the same order id exists in every replay."""
    query = text(
        "SELECT id::text AS id, run_id, order_id, symbol, side, price, quantity, fee, trace_id "
        "FROM trading_history WHERE (id::text = :i OR order_id = :i OR trace_id = :i) "
        "AND (CAST(:r AS text) IS NULL OR run_id = :r)"
    )
    async with db.session() as s:
        rows = (await s.execute(query, {"i": ident, "r": run_id})).mappings().all()
    found = [dict(r) for r in rows]
    trace_id = next((r["trace_id"] for r in found if r.get("trace_id")), None)
    return trace_id, found


async def related_rows(
    db: Any, order_ids: list[str], run_id: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not order_ids:
        return [], []
    async with db.session() as s:
        decisions = (
            await s.execute(
                text("SELECT decision, confidence, model_used, reasoning FROM agent_decisions "
                     "WHERE order_id = ANY(:ids) AND (CAST(:r AS text) IS NULL OR run_id = :r)"),
                {"ids": order_ids, "r": run_id},
            )
        ).mappings().all()  # fmt: skip
        audit_query = text(
            "SELECT violation_type, description FROM risk_audit WHERE order_id = ANY(:ids) "
            "AND (CAST(:r AS text) IS NULL OR run_id = :r)"
        )
        audits = (await s.execute(audit_query, {"ids": order_ids, "r": run_id})).mappings().all()
    return [dict(r) for r in decisions], [dict(r) for r in audits]


async def build_trace(js: JetStreamContext | None, db: Any, ident: str, run_id: str | None = None) -> Trace:
    trace_id, ledger = (None, []) if db is None else await ledger_rows(db, ident, run_id)
    trace_id = trace_id or ident
    trace = Trace(trace_id=trace_id, ledger=ledger)
    if js is not None:
        trace.hops = [
            hop
            for hop in await collect_hops(js, trace_id)
            if run_id is None or hop.headers.get(h.RUN_ID) == run_id
        ]
    order_ids = sorted({r["order_id"] for r in ledger} | {
        str(hop.data["order_id"]) for hop in trace.hops if "order_id" in hop.data
    })  # fmt: skip
    if db is not None:
        trace.decisions, trace.audits = await related_rows(db, order_ids, run_id)
        trace.live_state = await live_state(db, run_id or h.LIVE_RUN)
    return trace


async def live_state(db: Any, run_id: str) -> list[str]:
    """The run's kill switch and its last reconciliation with the exchange, as trace lines."""
    from coinpilot.db.halts import active_halt

    halt = await active_halt(db, run_id)
    async with db.session() as s:
        last = (
            await s.execute(
                text("SELECT checked_at, venue, ok, discrepancies, report FROM reconciliations "
                     "WHERE run_id = :r ORDER BY checked_at DESC, id DESC LIMIT 1"),
                {"r": run_id},
            )
        ).mappings().first()  # fmt: skip
    out = [f"run {run_id}: " + (f"HALTED: {halt.describe()}" if halt else "not halted")]
    if last is None:
        out.append(f"run {run_id}: never reconciled")
        return out
    verdict = "ok" if last["ok"] else f"{last['discrepancies']} discrepancies"
    out.append(
        f"run {run_id}: last reconciliation {last['checked_at'].isoformat()} ({last['venue']}): {verdict}"
    )
    report = last["report"]
    for line in json.loads(report) if isinstance(report, str) else report:
        if line.get("verdict") != "equal":
            out.append(
                f"  {line['currency']}: ledger {line['ledger']} exchange {line['exchange_balance']} "
                f"+ locked {line['exchange_locked']}, diff {line['difference']}: {line['verdict']} "
                f"{line.get('why', '')}".rstrip()
            )
    return out
