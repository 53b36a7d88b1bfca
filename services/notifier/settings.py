"""Notifier settings (env prefix ``COINPILOT_``): sinks, retries, the report's LLM.

Each sink is optional: Discord when ``COINPILOT_DISCORD_WEBHOOK_URL`` is set, n8n when
``COINPILOT_N8N_WEBHOOK_SECRET`` is set (as the original, no secret means no n8n request at all).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from coinpilot.contracts import AiVerdict
from services.notifier.core import NotifierParams, ReportSchedule, RetryPolicy
from services.notifier.delivery import SinkTargets


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_", extra="ignore", frozen=True)

    discord_webhook_url: SecretStr | None = Field(
        default=None, description="Direct Discord webhook (has a token)"
    )
    n8n_url: str = Field(default="http://n8n:5678", description="n8n base URL; webhooks at /webhook/<path>")
    n8n_webhook_secret: SecretStr | None = Field(default=None, description="X-Webhook-Secret for n8n")

    notifier_ai_decisions: Annotated[frozenset[AiVerdict], NoDecode] = Field(
        default=frozenset({AiVerdict.REJECT}), description="AI verdicts to notify, comma separated"
    )
    notifier_deliver_replays: bool = Field(
        default=False, description="Also post events of replay runs (run_id other than live)"
    )
    notifier_max_attempts: int = Field(default=3, ge=1)
    notifier_backoff_base_seconds: float = Field(default=1.0, ge=0)
    notifier_request_timeout_seconds: float = Field(default=5.0, gt=0)
    notifier_max_retry_after_seconds: float = Field(default=60.0, ge=0)
    notifier_report_misfire_grace_seconds: float = Field(default=7200.0, ge=0)
    notifier_report_check_seconds: float = Field(
        default=5.0, gt=0, description="Least pause between two report checks (event time drives them)"
    )

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("COINPILOT_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(default=None, description="e.g. a proxy; default api.openai.com")
    notifier_report_model: str = "gpt-4o-mini"
    notifier_report_language: str = "Korean"
    notifier_openai_timeout_seconds: float = Field(default=30.0, gt=0)
    notifier_openai_max_retries: int = Field(default=2, ge=0)

    @field_validator("discord_webhook_url", "n8n_webhook_secret", "openai_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("notifier_ai_decisions", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(v.strip().upper() for v in value.split(",") if v.strip())
        return value

    def targets(self) -> SinkTargets:
        return SinkTargets(self.discord_webhook_url, self.n8n_url, self.n8n_webhook_secret)

    def params(self) -> NotifierParams:
        return NotifierParams(sinks=self.targets().sinks(), ai_decisions=self.notifier_ai_decisions)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.notifier_max_attempts,
            backoff_base_seconds=self.notifier_backoff_base_seconds,
            request_timeout_seconds=self.notifier_request_timeout_seconds,
            max_retry_after_seconds=self.notifier_max_retry_after_seconds,
        )

    def schedule(self) -> ReportSchedule:
        return ReportSchedule(misfire_grace=timedelta(seconds=self.notifier_report_misfire_grace_seconds))
