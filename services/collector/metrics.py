"""The collector's own instruments (names the dashboards and alerts use: tests/deploy/support.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UPBIT_REQUEST_SECONDS = Histogram(
    "coinpilot_upbit_request_seconds",
    "Upbit REST request latency by endpoint and HTTP status (or timeout/network)",
    ["endpoint", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPBIT_RETRIES = Counter(
    "coinpilot_collector_upbit_retries",
    "Upbit requests retried, by reason (rate_limited, transient)",
    ["reason"],
)
CANDLES_PUBLISHED = Counter(
    "coinpilot_candles_published", "Closed 1m candles published on candles.1m.<SYM>", ["symbol"]
)
CANDLES_BACKFILLED = Counter(
    "coinpilot_collector_backfilled_candles",
    "Closed 1m candles written to market_data by the backfill",
    ["symbol"],
)
CANDLES_RECORDED = Counter(
    "coinpilot_collector_recorded_candles",
    "candles.1m messages recorded in market_data: written (inserted) or unchanged (already there)",
    ["outcome"],
)
FAILURES = Counter(
    "coinpilot_collector_failures",
    "Backfill or poll attempts of one symbol that failed, by stage and error class",
    ["symbol", "stage", "error"],
)
