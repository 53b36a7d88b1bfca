"""Connection settings shared by every service (env prefix ``COINPILOT_``), and settings built
with explicit overrides.

Settings hold connections and secrets; the frozen parameters a core sees (``RiskParams`` and
friends) are built from the strategy YAML, never from here. Secrets are ``SecretStr``: their
``repr`` and ``str`` are masked, so logging a settings object never leaks them.

A run mode that changes settings (a backtest's ``--compare-env`` variant) never writes
``os.environ``: :func:`with_overrides` builds the settings object from the environment plus the
overrides, given by their environment names and read exactly as pydantic-settings reads the
environment (prefixes, aliases, case), passed as constructor values, which outrank the environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from coinpilot.errors import ConfigError
from coinpilot.symbols import DEFAULT_SYMBOLS, is_market

S = TypeVar("S", bound=BaseSettings)


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
    stream_replicas: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="Copies of every JetStream stream: 1 on a single server, 3 on a 3-node cluster; "
        "unset: as the streams already are (1 for new ones)",
    )

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

    partitions: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Symbol partitions of the partitioned stages (indicator, strategy, collector); 1: one "
        "shared durable per consumer, one replica (docs/deploy.md)",
    )
    member_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This replica's identity among its stage's members (the pod name); unset: host-pid",
    )
    partition_lease_seconds: float = Field(default=10.0, gt=0, description="A partition lease's life")
    partition_heartbeat_seconds: float = Field(default=2.0, gt=0, description="Lease renewal period")
    standby: bool = Field(
        default=False,
        description="Hot standby of a single-writer stage (risk, executor): replicas compete for one "
        "lease; only its holder consumes (docs/deploy.md)",
    )

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


class OverrideSource(EnvSettingsSource):
    """The environment source of pydantic-settings reading ``overrides`` instead of ``os.environ``.

    Its result (field values keyed as the class validates them) is meant as constructor values.
    Overriding ``_load_env_vars`` is how the library's own sources (dotenv, cloud secrets) swap
    what they read.
    """

    def __init__(self, settings_cls: type[BaseSettings], overrides: Mapping[str, str]) -> None:
        self._overrides = dict(overrides)  # read by _load_env_vars during the base __init__
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._overrides, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def fields_named(settings_cls: type[BaseSettings], name: str, value: str) -> set[str]:
    """The fields of ``settings_cls`` that the environment variable ``name`` sets."""
    keys = OverrideSource(settings_cls, {name: value})().keys()
    return {field for field, info in settings_cls.model_fields.items() if keys & _keys_of(field, info)}


def _keys_of(field: str, info: FieldInfo) -> set[str]:
    """The keys the source may file a field's value under: its name and its aliases."""
    alias = info.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    return {field, *(c for c in choices if isinstance(c, str)), *([info.alias] if info.alias else [])}


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """The environment names ``settings_cls`` reads, upper case (for messages: :func:`fields_named`
    is what decides)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field, info in settings_cls.model_fields.items():
        aliases = _keys_of(field, info) - {field}
        names.update(a.upper() for a in (aliases or {f"{prefix}{field}"}))
    return names


def unread_names(overrides: Mapping[str, str], classes: Iterable[type[BaseSettings]]) -> list[str]:
    """The names in ``overrides`` that none of ``classes`` reads from the environment."""
    classes = list(classes)
    return [n for n, v in overrides.items() if not any(fields_named(c, n, v) for c in classes)]


def with_overrides(settings_cls: type[S], overrides: Mapping[str, str], **values: Any) -> S:
    """``settings_cls`` from the environment, with ``overrides`` (environment names; those the class
    does not read are skipped) and ``values`` (field names) on top. ``os.environ`` is only read.

    An override may not set a field given in ``values``: the caller sets that one itself.
    """
    clash = sorted(n for n, v in overrides.items() if fields_named(settings_cls, n, v) & values.keys())
    if clash:
        raise ConfigError(f"{', '.join(clash)}: set explicitly in this mode, not by an override")
    return settings_cls(**OverrideSource(settings_cls, overrides)(), **values)
