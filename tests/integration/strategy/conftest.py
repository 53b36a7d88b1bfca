"""Fixtures of the strategy integration tests (shared with the risk ones): see ``harness.py``."""

from tests.integration.risk.harness import migrated_db, pipeline_nats

__all__ = ["migrated_db", "pipeline_nats"]
