"""Fixtures of the risk integration tests (shared with the strategy ones): see ``harness.py``."""

from tests.integration.risk.harness import migrated_db, pipeline_nats

__all__ = ["migrated_db", "pipeline_nats"]
