"""inbox.claim: the first claim of a message wins, a redelivery does not, a rollback undoes a claim."""

from __future__ import annotations

import pytest

from coinpilot.db import Database, claim, claim_on

pytestmark = pytest.mark.postgres


async def test_a_message_is_claimed_once_then_reported_as_already_processed(db: Database) -> None:
    async with db.session() as session:
        assert await claim(session, "risk-signals", "signal:entry:KRW-BTC:1", "live") is True
    async with db.session() as session:
        assert await claim(session, "risk-signals", "signal:entry:KRW-BTC:1", "live") is False


async def test_the_same_message_is_new_for_another_consumer_and_for_another_run(db: Database) -> None:
    async with db.session() as session:
        assert await claim(session, "agent-orders", "order:KRW-BTC:2", "live") is True
        assert await claim(session, "executor-orders", "order:KRW-BTC:2", "live") is True
        assert await claim(session, "agent-orders", "order:KRW-BTC:2", "replay-1") is True
        assert await claim(session, "agent-orders", "order:KRW-BTC:2", "replay-1") is False


async def test_a_rolled_back_transaction_releases_its_claim(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            assert await claim(session, "risk-fills", "fill:KRW-ETH:3", "live") is True
            raise RuntimeError("handler failed after claiming")
    async with db.session() as session:
        assert await claim(session, "risk-fills", "fill:KRW-ETH:3", "live") is True


async def test_claim_on_a_driver_transaction_shares_the_inbox_with_claim(db: Database) -> None:
    async with db.transaction() as conn:
        assert await claim_on(conn, "executor-orders", "order:KRW-XRP:4", "live") is True
        assert await claim_on(conn, "executor-orders", "order:KRW-XRP:4", "live") is False
    async with db.session() as session:
        assert await claim(session, "executor-orders", "order:KRW-XRP:4", "live") is False
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            assert await claim_on(conn, "risk-fills", "fill:KRW-XRP:5", "live") is True
            raise RuntimeError("handler failed after claiming")
    async with db.transaction() as conn:
        assert await claim_on(conn, "risk-fills", "fill:KRW-XRP:5", "live") is True
