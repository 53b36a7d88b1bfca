"""Service runtime: one way to run any service (``coinpilot run <service>``)."""

from coinpilot.bus import Consumer, Delivery, parser_for
from coinpilot.runtime.definition import Runtime, ServiceDefinition
from coinpilot.runtime.host import ServiceHost, run
from coinpilot.service_names import SERVICES

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
