"""The ``llm_usage_events`` rows of one decision (§5.7): built from the calls, written by ``state``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from coinpilot.contracts import OrderProposed
from services.agent.pricing import PRICE_VERSION, estimate_cost_usd
from services.agent.recording import CallStatus
from services.agent.routing import STRATEGY_NAME
from services.agent.verdicts import CallSummary

USAGE_FEATURE = "ai_decision"


def usage_request_id(run_id: str, order_id: str, route: str, provider: str, model: str) -> str:
    """``<route>:<provider>:<model>:<id>`` (<= 120 chars); the id is a hash of the run and order,
    not a uuid4, so a redelivery writes the same row (ON CONFLICT DO NOTHING)."""
    digest = hashlib.sha256(f"{run_id}|{order_id}|{route}".encode()).hexdigest()[:32]
    return f"{route}:{provider}:{model}:{digest}"[:120]


def usage_rows(
    run_id: str, order: OrderProposed, calls: Sequence[CallSummary], pipeline_error: str | None
) -> list[dict[str, Any]]:
    """``llm_usage_events`` rows for the calls that really went to a provider, plus an
    ``ai_decision_pipeline`` error row when the runner timed out or failed (§5.7)."""
    rows: list[dict[str, Any]] = []
    meta = {"symbol": order.symbol, "strategy_name": STRATEGY_NAME, "order_id": order.order_id}
    live = [c for c in calls if c.over_network]
    for call in live:
        route = f"ai_decision_{call.node}"
        tokens = [t for t in (call.input_tokens, call.output_tokens) if t is not None]
        rows.append(
            {
                "run_id": run_id,
                "request_id": usage_request_id(run_id, order.order_id, route, call.provider, call.model),
                "route": route,
                "feature": USAGE_FEATURE,
                "provider": call.provider,
                "model": call.model,
                "status": "success" if call.status == CallStatus.OK else "error",
                "error_type": str(call.error_kind) if call.error_kind is not None else None,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "total_tokens": sum(tokens) if tokens else None,
                "estimated_cost_usd": estimate_cost_usd(call.model, call.input_tokens, call.output_tokens),
                "price_version": PRICE_VERSION,
                "latency_ms": call.latency_ms,
                "meta": meta,
            }
        )
    if pipeline_error is not None and live:
        first = live[0]
        rows.append(
            {
                "run_id": run_id,
                "request_id": usage_request_id(
                    run_id, order.order_id, "ai_decision_pipeline", first.provider, first.model
                ),
                "route": "ai_decision_pipeline",
                "feature": USAGE_FEATURE,
                "provider": first.provider,
                "model": first.model,
                "status": "error",
                "error_type": pipeline_error,
                "input_tokens": None,
                "output_tokens": None,
                "total_tokens": None,
                "estimated_cost_usd": None,
                "price_version": PRICE_VERSION,
                "latency_ms": sum(c.latency_ms for c in live),
                "meta": meta,
            }
        )
    return rows
