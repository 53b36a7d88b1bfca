"""Connection settings shared by every service (env prefix ``COINPILOT_``).

Settings hold connections and secrets; the frozen parameters a core sees (``RiskParams`` and
friends) are built from the strategy YAML, never from here. Secrets are ``SecretStr``: their
``repr`` and ``str`` are masked, so logging a settings object never leaks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from coinpilot.symbols import DEFAULT_SYMBOLS, is_market


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_", extra="ignore", frozen=True)

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_creds_file: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None

    database_url: SecretStr | None = Field(
        default=SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/coinpilot"),
        description="Empty for a service that needs no database (benchmarks, plug-ins)",
    )
    redis_url: str | None = Field(default="redis://127.0.0.1:6379/0", description="Empty: run without Redis")

    run_id: str = Field(default="live", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    symbols: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SYMBOLS
    strategy_config: Path | None = None

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=0, le=65535)
    log_json: bool = False
    log_level: str = "INFO"

    max_deliver: int = Field(
        default=5, ge=1, description="Deliveries before a failing message is dead-lettered"
    )
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    pull_batch_size: int = Field(default=32, ge=1)
    graceful_timeout_seconds: float = Field(default=15.0, gt=0)

    @field_validator("database_url", "redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not is_market(s)]
        if bad:
            raise ValueError(f"not Upbit market codes: {bad}")
        return value
