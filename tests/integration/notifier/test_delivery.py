"""Webhook delivery with the real httpx client against local Discord and n8n servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from coinpilot.db import Database, NotificationDelivery, NotificationSent
from coinpilot.errors import TransientError
from services.notifier.core import NotifierParams, RetryPolicy, Sink, event_key, plan
from services.notifier.delivery import Deliverer, Outcome, SinkResult, SinkTargets, dead_letter_reason
from services.notifier.state import PgJournal
from tests.support.fake_webhooks import FakeDiscord, FakeN8n, Misbehave
from tests.support.servers import free_port, wait_for
from tests.unit.notifier.factories import buy_fill, risk_alert, sell_fill

pytestmark = pytest.mark.postgres

BOTH = NotifierParams(sinks=frozenset({Sink.DISCORD, Sink.N8N}))
FAST = RetryPolicy(
    max_attempts=3, backoff_base_seconds=0.01, request_timeout_seconds=0.5, max_retry_after_seconds=1.0
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def deliverer(
    client: httpx.AsyncClient, db: Database, discord: FakeDiscord, n8n: FakeN8n, secret: str | None = None
) -> Deliverer:
    targets = SinkTargets(SecretStr(discord.webhook_url), n8n.base_url, SecretStr(secret or n8n.secret))
    return Deliverer(client, targets, FAST, PgJournal(db))


async def attempts(db: Database, key: str, sink: Sink) -> list[tuple[int, str, int | None]]:
    async with db.session() as s:
        rows = await s.execute(
            select(
                NotificationDelivery.attempt, NotificationDelivery.status, NotificationDelivery.http_status
            )
            .where(NotificationDelivery.event_key == key, NotificationDelivery.sink == str(sink))
            .order_by(NotificationDelivery.id)
        )
        return [tuple(r) for r in rows]


async def sent(db: Database, key: str) -> set[str]:
    async with db.session() as s:
        rows = await s.execute(select(NotificationSent.sink).where(NotificationSent.event_key == key))
        return set(rows.scalars())


async def test_a_fill_reaches_discord_as_an_embed_and_n8n_as_the_payload_with_the_secret(
    client, notifier_db, discord, n8n, run_id
) -> None:
    fill = sell_fill()
    key = event_key(fill, run_id)
    results = await deliverer(client, notifier_db, discord, n8n).deliver_all(plan(fill, key, BOTH))
    assert {(r.sink, r.outcome, r.attempts) for r in results} == {
        (Sink.DISCORD, Outcome.SENT, 1),
        (Sink.N8N, Outcome.SENT, 1),
    }
    (embed,) = discord.embeds()
    assert embed["title"] == "Trade Executed: SELL" and embed["color"] == 15548997
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [
        ("Symbol", "KRW-BTC"),
        ("Price", "102,897,000 KRW"),
        ("Quantity", "0.00999"),
    ]
    assert discord.received[0].answered == 204
    (request,) = n8n.received
    assert request.path == "/webhook/trade" and request.headers["x-webhook-secret"] == n8n.secret
    assert request.body["side"] == "SELL" and request.body["price"] == 102897000.0
    assert request.body["exit_reason"] == "TRAILING_STOP" and request.body["currency"] == "KRW"
    assert await sent(notifier_db, key) == {"discord", "n8n"}
    assert await attempts(notifier_db, key, Sink.DISCORD) == [(1, "success", 204)]


async def test_a_429_waits_the_retry_after_discord_asked_for(
    client, notifier_db, discord, n8n, run_id
) -> None:
    discord.script(Misbehave.rate_limited(retry_after=0.2))
    fill = buy_fill()
    key = event_key(fill, run_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    (result,) = [
        r
        for r in await deliverer(client, notifier_db, discord, n8n).deliver_all(plan(fill, key, BOTH))
        if r.sink is Sink.DISCORD
    ]
    assert (result.outcome, result.attempts) == (Outcome.SENT, 2)
    assert loop.time() - started >= 0.2  # the 10 ms backoff was replaced by the server's 200 ms
    assert [r.answered for r in discord.received] == [429, 204]
    assert await attempts(notifier_db, key, Sink.DISCORD) == [(1, "failed", 429), (2, "success", 204)]


async def test_5xx_and_a_timeout_are_retried_until_a_2xx(client, notifier_db, discord, n8n, run_id) -> None:
    discord.script(Misbehave.error(502), Misbehave.hang())
    fill = buy_fill()
    key = event_key(fill, run_id)
    results = await deliverer(client, notifier_db, discord, n8n).deliver_all(plan(fill, key, BOTH))
    assert {r.sink: (r.outcome, r.attempts) for r in results}[Sink.DISCORD] == (Outcome.SENT, 3)
    assert await attempts(notifier_db, key, Sink.DISCORD) == [
        (1, "failed", 502),
        (2, "failed", None),
        (3, "success", 204),
    ]
    assert len(discord.embeds()) == 1


async def test_a_bad_secret_is_refused_once_and_not_retried(
    client, notifier_db, discord, n8n, run_id
) -> None:
    fill = buy_fill()
    key = event_key(fill, run_id)
    results = await deliverer(client, notifier_db, discord, n8n, secret="wrong").deliver_all(
        plan(fill, key, BOTH)
    )
    by_sink = {r.sink: r for r in results}
    assert (by_sink[Sink.N8N].outcome, by_sink[Sink.N8N].attempts) == (Outcome.DEAD, 1)
    assert by_sink[Sink.N8N].detail.startswith("refused: HTTP 401")
    assert by_sink[Sink.DISCORD].outcome is Outcome.SENT
    assert await attempts(notifier_db, key, Sink.N8N) == [(1, "failed", 401), (1, "dead", None)]
    assert await sent(notifier_db, key) == {"discord"}


async def test_a_redelivered_fill_is_posted_once_per_sink(client, notifier_db, discord, n8n, run_id) -> None:
    fill = buy_fill()
    key = event_key(fill, run_id)
    d = deliverer(client, notifier_db, discord, n8n)
    await d.deliver_all(plan(fill, key, BOTH))
    again = await d.deliver_all(plan(fill, key, BOTH))
    assert {r.outcome for r in again} == {Outcome.DUPLICATE}
    assert (len(discord.received), len(n8n.received)) == (1, 1)


async def test_a_sink_down_past_the_retries_gives_up_with_a_reason_and_the_other_sink_is_served(
    client, notifier_db, discord, n8n, run_id
) -> None:
    discord.always = Misbehave.error(503)
    alert = risk_alert()
    key = event_key(alert, run_id)
    results = await deliverer(client, notifier_db, discord, n8n).deliver_all(plan(alert, key, BOTH))
    assert dead_letter_reason(results) == (
        'discord after 3 attempt(s): gave up: HTTP 503: {"message":"scripted failure","code":0}'
    )
    assert [r.answered for r in discord.received] == [503, 503, 503]
    assert [r.body["type"] for r in n8n.received] == ["COOLDOWN"]
    assert await sent(notifier_db, key) == {"n8n"}


async def test_a_hanging_sink_does_not_hold_back_the_other(client, notifier_db, discord, n8n, run_id) -> None:
    discord.always = Misbehave.hang()
    fill = buy_fill()
    key = event_key(fill, run_id)
    delivering = asyncio.create_task(
        deliverer(client, notifier_db, discord, n8n).deliver_all(plan(fill, key, BOTH))
    )
    await wait_for(lambda: sent(notifier_db, key), timeout=5)  # n8n done while Discord still hangs
    assert not delivering.done()
    results = await delivering
    assert {r.sink: r.outcome for r in results} == {Sink.DISCORD: Outcome.DEAD, Sink.N8N: Outcome.SENT}
    assert "timeout" in next(r.detail for r in results if r.sink is Sink.DISCORD)


def test_dead_letter_reason_is_none_when_every_sink_is_served() -> None:
    assert (
        dead_letter_reason(
            [SinkResult(Sink.N8N, Outcome.SENT, 1), SinkResult(Sink.DISCORD, Outcome.DUPLICATE, 0)]
        )
        is None
    )


async def test_a_database_outage_fails_the_delivery_before_anything_is_posted(
    client, discord, n8n, run_id
) -> None:
    down = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")
    fill = buy_fill()
    with pytest.raises(TransientError):
        await deliverer(client, down, discord, n8n).deliver_all(plan(fill, event_key(fill, run_id), BOTH))
    await down.dispose()
    assert (discord.received, n8n.received) == ([], [])  # the runtime retries the event later
