"""Composition root of the notifier: sinks, the report clock, and the consumers."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from openai import AsyncOpenAI

from coinpilot.bus import LIVE_RUN
from coinpilot.clock import wall_clock_now
from coinpilot.contracts import AiDecision, Contract, DailyReport, Fill, HourlyCandle, RiskAlert
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from coinpilot.symbols import quote_currency
from services.notifier.core import Event, event_key, plan
from services.notifier.daily_report_job import ReportClock
from services.notifier.delivery import Deliverer, dead_letter_reason
from services.notifier.settings import NotifierSettings
from services.notifier.state import PgJournal
from services.notifier.summarizer import OpenAiSummarizer, Summarizer

EVENT_CONSUMERS: tuple[tuple[str, str, type[Contract]], ...] = (
    ("fills.*", "notifier-fills", Fill),
    ("ai.decisions.*", "notifier-ai", AiDecision),
    ("risk.alerts", "notifier-risk", RiskAlert),
    ("reports.daily", "notifier-reports", DailyReport),
)
CLOCK_CONSUMER = ("candles.1h.*", "notifier-clock")


def stream_position(d: Delivery[Event]) -> tuple[str | None, int | None]:
    """The stream and sequence the event is stored at, so its dead letter can be redriven from it
    (``coinpilot dlq redrive``) even when the letter had to be truncated."""
    try:
        meta = d.raw.metadata if d.raw is not None else None
        return (meta.stream, int(meta.sequence.stream)) if meta is not None else (None, None)
    except Exception:  # a core-NATS message has no JetStream metadata
        return None, None


def make_summarizer(settings: NotifierSettings) -> Summarizer | None:
    if settings.openai_api_key is None:
        return None
    client = AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=settings.notifier_openai_max_retries,
        timeout=settings.notifier_openai_timeout_seconds,
    )
    return OpenAiSummarizer(
        client, settings.notifier_report_model, language=settings.notifier_report_language
    )


def build(rt: Runtime, settings: NotifierSettings | None = None) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("the notifier needs PostgreSQL (COINPILOT_DATABASE_URL)")
    settings = settings or NotifierSettings()
    params = settings.params()
    client = httpx.AsyncClient(follow_redirects=False)
    deliverer = Deliverer(client, settings.targets(), settings.retry_policy(), PgJournal(rt.db))

    async def publish(report: DailyReport, run_id: str) -> None:
        await rt.bus.publish(report, run_id=run_id, trace_id=report.msg_id())

    clock = ReportClock(
        rt.db,
        settings.schedule(),
        make_summarizer(settings),
        publish,
        quote_currency(rt.settings.symbols[0]),
        wall_clock=wall_clock_now,
    )

    async def on_event(d: Delivery[Event]) -> Sequence[Contract]:
        """Post to every sink; a sink that gave up puts the event on dlq.notifier. Acks after both."""
        clock.observe(d.run_id, d.message.ts_event)
        if d.run_id != LIVE_RUN and not settings.notifier_deliver_replays:
            return []
        results = await deliverer.deliver_all(
            plan(d.message, event_key(d.message, d.run_id), params), d.keepalive
        )
        reason = dead_letter_reason(results)
        if reason is not None:
            rt.log.error("notification of %s dead-lettered: %s", d.message.msg_id(), reason)
            stream, sequence = stream_position(d)
            await rt.bus.dead_letter(
                subject=d.subject,
                body=d.raw.data if d.raw is not None else d.message.to_json(),
                headers=d.headers,
                reason=f"notifier: {reason}",
                deliveries=d.deliveries,
                stream_sequence=sequence,
                stream=stream,
            )
        return []

    async def on_clock(d: Delivery[HourlyCandle]) -> Sequence[Contract]:
        clock.observe(d.run_id, d.message.ts_event)
        return []

    async def run_clock(_: Runtime) -> None:
        await clock.run(settings.notifier_report_check_seconds)

    async def close_client(_: Runtime) -> None:
        await client.aclose()

    consumers = [
        Consumer(subject=subject, durable=durable, handler=on_event, parse=parser_for(contract))
        for subject, durable, contract in EVENT_CONSUMERS
    ]
    consumers.append(
        Consumer(
            subject=CLOCK_CONSUMER[0],
            durable=CLOCK_CONSUMER[1],
            handler=on_clock,
            parse=parser_for(HourlyCandle),
        )
    )
    return ServiceDefinition(name="notifier", consumers=consumers, tasks=[run_clock], on_stop=close_client)
