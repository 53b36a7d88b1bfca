"""The base of every message: frozen, strict, versioned, and aware of its subject and id."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from coinpilot.clock import ensure_utc, iso_minute
from coinpilot.errors import ContractError
from coinpilot.symbols import is_market

SCHEMA_VERSION = 1


def _check_market(value: str) -> str:
    if not is_market(value):
        raise ValueError(f"not an Upbit market code like KRW-BTC: {value!r}")
    return value


def _to_utc(value: datetime) -> datetime:
    return ensure_utc(value)


Symbol = Annotated[str, AfterValidator(_check_market), Field(examples=["KRW-BTC"], max_length=20)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
# Exact decimals, written as JSON strings so no float ever touches money on the wire.
Money = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json")]


class Contract(BaseModel):
    """One immutable model per subject. ``extra="forbid"`` turns a producer typo into a ContractError."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    SUBJECT: ClassVar[str]
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Contract version")
    ts_event: UtcDatetime = Field(description="Event time: when this happened in market time (UTC)")

    def subject(self) -> str:
        return self.SUBJECT.format(**self._subject_fields())

    def _subject_fields(self) -> dict[str, Any]:
        return {"symbol": getattr(self, "symbol", "")}

    def msg_id(self) -> str:
        """Deterministic id, sent as ``Nats-Msg-Id`` so JetStream drops a re-publish."""
        raise NotImplementedError  # pragma: no cover - every concrete contract overrides it

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse wire bytes, raising :class:`ContractError` with the validation detail."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ContractError(f"{cls.__name__}: {_short_errors(exc)}") from exc

    @classmethod
    def subject_pattern(cls) -> str:
        """The wildcard subscription for every instance, e.g. ``signals.entry.*``."""
        out = cls.SUBJECT
        for name in ("symbol", "service", "interval"):
            out = out.replace("{" + name + "}", "*")
        return out


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def minute_key(ts: datetime) -> str:
    return iso_minute(ts)
