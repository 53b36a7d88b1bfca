"""The metric catalogue the dashboards and alerts are built on is what the code exports.

Imports the runtime's instruments and every service's ``metrics.py`` (STYLE: a service's own
instruments live there), then compares names, types and label names with the catalogue in
tests/deploy/support.py. A dashboard panel over a metric nobody exports would stay empty forever.
"""

from __future__ import annotations

import importlib
import importlib.util

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from coinpilot.runtime import SERVICES
from tests.deploy.support import CATALOGUE

INSTRUMENT_MODULES = (
    "coinpilot.metrics",
    "coinpilot.cache.metrics",
    *(f"services.{s}.metrics" for s in SERVICES),
)


def exported() -> dict[str, MetricWrapperBase]:
    """Every registered instrument by the name a query uses (counters with _total)."""
    for module in INSTRUMENT_MODULES:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) and importlib.util.find_spec(module):
            importlib.import_module(module)
    found: dict[str, MetricWrapperBase] = {}
    for name, collector in REGISTRY._names_to_collectors.items():  # the registry keeps no public index
        if isinstance(collector, MetricWrapperBase):
            found[name] = collector
    return found


def test_the_runtime_exports_its_standard_metrics_as_catalogued() -> None:
    instruments = exported()
    for name in (
        "coinpilot_messages_handled_total",
        "coinpilot_handler_seconds",
        "coinpilot_consumer_pending",
        "coinpilot_service_ready",
    ):
        kind, labels = CATALOGUE[name]
        assert instruments[name]._type == kind
        assert frozenset(instruments[name]._labelnames) == labels


def test_every_catalogued_metric_is_exported_with_its_type_and_labels() -> None:
    instruments = exported()
    problems: list[str] = []
    for name, (kind, labels) in sorted(CATALOGUE.items()):
        instrument = instruments.get(name)
        if instrument is None:
            problems.append(f"{name}: exported by none of the instrument modules")
            continue
        if instrument._type != kind:
            problems.append(f"{name}: a {instrument._type}, the dashboards expect a {kind}")
        if frozenset(instrument._labelnames) != labels:
            problems.append(f"{name}: labels {sorted(instrument._labelnames)}, expected {sorted(labels)}")
    assert not problems, f"modules: {', '.join(INSTRUMENT_MODULES)}\n" + "\n".join(problems)
