"""The agent's Prometheus instruments.

``coinpilot_ai_*`` are the catalogue the dashboards and alerts are built on (names, types and
labels checked by ``tests/deploy/test_metrics_contract.py``); everything else is
``coinpilot_agent_*``. No event is counted under two names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- the catalogue (infra/grafana/dashboards/ai.json, infra/prometheus/rules) --------------------
AI_REQUESTS = Counter(
    "coinpilot_ai_requests",
    "Model calls, by provider, model and how they ended (ok, error, timeout, record_missing)",
    ["provider", "model", "status"],
)
AI_DECISIONS = Counter(
    "coinpilot_ai_decisions",
    "Decisions published (once per order), by verdict and reason code ('' for a CONFIRM)",
    ["decision", "reason"],
)
AI_PREFILTER_SKIPS = Counter(
    "coinpilot_ai_prefilter_skips", "Orders the pre-filter kept from the model, by reason code", ["reason"]
)
AI_GUARDRAIL_BLOCKS = Counter(
    "coinpilot_ai_guardrail_blocks", "Orders the guardrails kept from the model, by block reason", ["reason"]
)
AI_REQUEST_SECONDS = Histogram(
    "coinpilot_ai_request_seconds",
    "Latency of model calls that went over the network",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40),
)
AI_COST_USD = Counter(
    "coinpilot_ai_cost_usd", "Estimated spend of live model calls (USD, §5.7 prices)", ["provider", "model"]
)
AI_GLOBAL_BLOCK = Gauge("coinpilot_ai_global_block", "1 while a global AI block is active (this run)")
AI_ERROR_STREAK = Gauge("coinpilot_ai_error_streak", "AI-error rejections in a row (this run)")
AI_CONTEXT_CANDLES = Histogram(
    "coinpilot_ai_context_candles",
    "Closed hourly candles in the market context of an order",
    buckets=(0, 4, 8, 12, 16, 20, 24, 30),
)

# -- the agent's own -----------------------------------------------------------------------------
DECISIONS_REEMITTED = Counter(
    "coinpilot_agent_decisions_reemitted",
    "Redelivered orders answered from the stored decision instead of a new review",
)
REVIEW_SECONDS = Histogram(
    "coinpilot_agent_review_seconds",
    "Wall time of one Analyst -> Guardian review",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 40, 60),
)
REVIEWS_IN_FLIGHT = Gauge("coinpilot_agent_reviews_in_flight", "Reviews currently waiting on a model")
LLM_TOKENS = Counter("coinpilot_agent_llm_tokens", "Tokens spent on live calls", ["provider", "direction"])
GUARDRAIL_STORE_ERRORS = Counter(
    "coinpilot_agent_guardrail_store_errors",
    "Redis errors in the guardrails (the AI call is blocked: fail closed)",
    ["operation"],
)
GLOBAL_BLOCKS = Counter("coinpilot_agent_global_blocks", "Global AI blocks set, by kind", ["kind"])
KEEPALIVES = Counter(
    "coinpilot_agent_keepalives", "in_progress() acks sent for orders still under review (resets ack wait)"
)
CONTEXT_WAITING = Gauge(
    "coinpilot_agent_context_waiting", "Orders waiting for the hourly candle that closed just before them"
)
CONTEXT_WAITS = Counter(
    "coinpilot_agent_context_waits",
    "Orders that waited for their last hourly candle, by outcome",
    ["outcome"],
)
