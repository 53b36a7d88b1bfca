"""Collector settings: ``COINPILOT_UPBIT_BASE_URL`` and ``COINPILOT_COLLECTOR_*``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.collector.upbit import DEFAULT_BASE_URL, RetryPolicy


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COINPILOT_COLLECTOR_", extra="ignore", frozen=True, populate_by_name=True
    )

    upbit_base_url: str = Field(
        default=DEFAULT_BASE_URL,
        validation_alias=AliasChoices("COINPILOT_UPBIT_BASE_URL", "COINPILOT_COLLECTOR_UPBIT_BASE_URL"),
        description="Upbit REST base URL (a local fake in tests)",
    )
    upbit_enabled: bool = Field(
        default=True, description="Backfill and poll Upbit; false = only record candles published by others"
    )
    timeout_seconds: float = Field(default=5.0, gt=0, description="Per request, seconds")
    max_attempts: int = Field(default=5, ge=1, description="Tries per request on 429/5xx/timeouts")
    backoff_base_seconds: float = Field(default=0.5, gt=0, description="First backoff step, seconds")
    backoff_cap_seconds: float = Field(default=30.0, gt=0, description="Largest backoff step, seconds")
    max_requests_per_second: float = Field(
        default=8.0, gt=0, le=10, description="Request starts per second across symbols (Upbit allows 10)"
    )
    backfill_lookback_minutes: int = Field(
        default=13_200, ge=1, description="History backfilled when less is stored (200 hours + 20 margin)"
    )
    poll_offset_seconds: float = Field(
        default=2.0, ge=0, lt=60, description="Seconds after each minute boundary to poll"
    )

    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base_seconds, self.backoff_cap_seconds)

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=self.backfill_lookback_minutes)

    @property
    def poll_offset(self) -> timedelta:
        return timedelta(seconds=self.poll_offset_seconds)
