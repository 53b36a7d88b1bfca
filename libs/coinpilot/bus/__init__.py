"""FastStream/NATS JetStream wiring: streams, headers, publishing, and the consumer ladder."""

from coinpilot.bus.consumer import Consumer, Delivery, Handler, Parser, backoff_seconds, parser_for, process
from coinpilot.bus.headers import LIVE_RUN, qualified_msg_id
from coinpilot.bus.publisher import Bus
from coinpilot.bus.streams import STREAMS, StreamSpec, ensure_streams, stream_for_subject

__all__ = [
    "LIVE_RUN",
    "STREAMS",
    "Bus",
    "Consumer",
    "Delivery",
    "Handler",
    "Parser",
    "StreamSpec",
    "backoff_seconds",
    "ensure_streams",
    "parser_for",
    "process",
    "qualified_msg_id",
    "stream_for_subject",
]
