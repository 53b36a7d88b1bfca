"""Model providers behind one small interface: ``async def complete(request) -> ProviderResponse``.

This module holds the interface, the request/response types and :class:`RulesProvider` (an
offline deterministic reviewer, ``services.agent.rules_reviewer``). The SDK-backed providers live in
``services.agent.sdk_providers``: the ``anthropic`` and ``openai`` packages take ~1.2 s to import,
which a backtest on the rules reviewer should not pay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.agent import rules_reviewer
from services.agent.guard_rules import ErrorKind
from services.agent.routing import RULES, RULES_MODEL


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """One structured-output call. ``facts`` are the structured inputs the user message renders;
    only the rules reviewer reads them, and they are not part of the record key (the text is)."""

    node: str
    provider: str
    model: str
    prompt_version: str
    order_id: str
    system: str
    user: str
    tool_name: str
    tool_description: str
    schema: Mapping[str, Any]
    temperature: float | None = 0.0
    max_tokens: int = 1024
    facts: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def canonical(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "node": self.node,
            "order_id": self.order_id,
            "system": self.system,
            "user": self.user,
            "tool_name": self.tool_name,
            "schema": dict(self.schema),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def key(self) -> str:
        """sha256 of (provider, model, prompt version, canonical inputs): the ``llm_call_records`` key."""
        blob = json.dumps(self.canonical(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """What a provider answered. ``output`` is the tool input (None when the model answered in
    prose); ``output_error`` says why arguments could not be read, if they could not."""

    output: dict[str, Any] | None
    text: str = ""
    stop_reason: str | None = None
    model: str = ""
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "text": self.text,
            "stop_reason": self.stop_reason,
            "model": self.model,
            "response_id": self.response_id,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "output_error": self.output_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderResponse:
        return cls(
            output=data.get("output"),
            text=data.get("text", ""),
            stop_reason=data.get("stop_reason"),
            model=data.get("model", ""),
            response_id=data.get("response_id"),
            input_tokens=data.get("input_tokens"),
            output_tokens=data.get("output_tokens"),
            output_error=data.get("output_error", ""),
        )


class ProviderError(Exception):
    """A call that produced no answer, classified by ``kind`` (never by its text)."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


class Provider(Protocol):
    name: str

    async def complete(self, request: LlmRequest) -> ProviderResponse: ...

    async def close(self) -> None: ...


def classify_status(status: int, error_type: str | None, code: str | None) -> ErrorKind:
    """Map an HTTP error to a kind from the structured fields of the provider's error body."""
    if status == 402 or error_type == "billing_error" or code == "insufficient_quota":
        return ErrorKind.LOW_CREDIT
    if status == 429 or error_type == "rate_limit_error":
        return ErrorKind.RATE_LIMITED
    if status == 529 or error_type == "overloaded_error":
        return ErrorKind.OVERLOADED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 408 or error_type == "timeout_error":
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.BAD_REQUEST


class RulesProvider:
    """Answers from ``services.agent.rules_reviewer``: a pure function of the request's facts."""

    name = RULES

    async def complete(self, request: LlmRequest) -> ProviderResponse:
        output = rules_reviewer.review(request.node, request.facts)
        return ProviderResponse(output=output, stop_reason="tool_use", model=RULES_MODEL)

    async def close(self) -> None:
        return None
