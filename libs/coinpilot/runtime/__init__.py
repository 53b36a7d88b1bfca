"""Service runtime: what a service is made of (definition, consumers, pull loop, probes).

The host that runs services (``coinpilot run <service>``) is ``apps.host``: it imports the
services, so it sits above them, outside this library.
"""

from coinpilot.bus import Consumer, Delivery, parser_for
from coinpilot.runtime.definition import Runtime, ServiceDefinition
from coinpilot.runtime.owned import OwnedSymbols
from coinpilot.service_names import SERVICES

__all__ = [
    "SERVICES",
    "Consumer",
    "Delivery",
    "OwnedSymbols",
    "Runtime",
    "ServiceDefinition",
    "parser_for",
]
