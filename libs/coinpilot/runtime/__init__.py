"""Service runtime: one way to run any service (``coinpilot run <service>``)."""

from coinpilot.bus import Consumer, Delivery, parser_for
from coinpilot.runtime.definition import SERVICES, Runtime, ServiceDefinition
from coinpilot.runtime.host import ServiceHost, run

__all__ = [
    "SERVICES",
    "Consumer",
    "Delivery",
    "Runtime",
    "ServiceDefinition",
    "ServiceHost",
    "parser_for",
    "run",
]
