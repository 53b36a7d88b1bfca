"""The notifier's own instruments (the runtime already counts handled/failed messages)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "coinpilot_notifier_deliveries",
    "Webhook deliveries: one per HTTP attempt (sent, or failed for any non-2xx/timeout), plus one "
    "per event skipped as already sent (duplicate) or given up on (dead_lettered)",
    ["sink", "event_type", "status"],
)
DELIVERY_SECONDS = Histogram(
    "coinpilot_notifier_delivery_seconds",
    "Duration of one webhook HTTP attempt, timeouts included",
    ["sink", "event_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REPORTS = Counter(
    "coinpilot_notifier_daily_reports",
    "Daily reports built, by how the summary was written (llm, fallback_no_key, fallback_error)",
    ["summary"],
)
