"""Standard instruments every service exposes (the runtime records them for each consumer).

Names follow STYLE 2.5: ``coinpilot_<thing>_<unit>``, counters end in ``_total``, labels are
bounded (service, subject pattern, durable; never an order id).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES_HANDLED = Counter(
    "coinpilot_messages_handled", "Messages handled successfully", ["service", "subject"]
)
MESSAGES_FAILED = Counter(
    "coinpilot_messages_failed",
    "Handler attempts that failed (retried or dead-lettered)",
    ["service", "subject"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "coinpilot_messages_dead_lettered", "Messages copied to dlq.<service>", ["service", "subject"]
)
HANDLER_SECONDS = Histogram(
    "coinpilot_handler_seconds", "Time to handle one message", ["service", "subject"], buckets=LATENCY_BUCKETS
)
END_TO_END_SECONDS = Histogram(
    "coinpilot_end_to_end_seconds",
    "Delay from the message's publish time to the end of its handling",
    ["service", "subject"],
    buckets=LATENCY_BUCKETS,
)
CONSUMER_PENDING = Gauge(
    "coinpilot_consumer_pending",
    "Messages in the stream not yet delivered to the durable",
    ["service", "durable"],
)
CONSUMER_ACK_PENDING = Gauge(
    "coinpilot_consumer_ack_pending", "Messages delivered but not yet acked", ["service", "durable"]
)
SERVICE_READY = Gauge(
    "coinpilot_service_ready", "1 when the service is ready (broker and database)", ["service"]
)
TRANSIENT_RETRIES = Counter(
    "coinpilot_transient_retries",
    "Handler attempts that failed transiently (a dependency down) and are retried in place",
    ["service", "subject"],
)
CONSUMERS_RETRYING = Gauge(
    "coinpilot_consumers_retrying",
    "Consumers waiting out a transient failure in place (the service is not ready meanwhile)",
    ["service"],
)
