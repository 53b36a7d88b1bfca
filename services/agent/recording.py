"""Recorded model calls: every call's outcome is stored under the sha256 of its inputs.

* ``live``   - answer from the record when one exists (a redelivered order never pays twice),
  else call the provider and record what happened: the answer, the error, or the timeout.
* ``replay`` - answer from the record only: offline and byte-identical. A missing record is an
  ``ErrorKind.RECORD_MISSING`` rejection, never a silent live call.
* ``rules``  - the deterministic offline reviewer; nothing to record.

Timeouts are recorded as outcomes too, so a replay of a run in which the model was slow reaches
the same AI_TIMEOUT decision instantly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from services.agent.guard_rules import ErrorKind
from services.agent.providers import LlmRequest, Provider, ProviderError, ProviderResponse
from services.agent.routing import RULES
from services.agent.verdicts import CallSummary


class CallSource(StrEnum):
    LIVE = "live"
    REPLAY = "replay"
    RULES = "rules"


class CallStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class CallRecord:
    key: str
    provider: str
    model: str
    prompt_version: str
    node: str
    request: Mapping[str, Any]
    status: CallStatus
    response: Mapping[str, Any] | None
    error_kind: ErrorKind | None
    error_message: str
    http_status: int | None
    latency_ms: int


class RecordStore(Protocol):
    async def get(self, key: str) -> CallRecord | None: ...

    async def put(self, record: CallRecord) -> None: ...


class Caller:
    """Routes a request to its provider, or to the records, and logs a summary of every call."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        source: CallSource,
        store: RecordStore | None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._providers = providers
        self.source = source
        self._store = store
        self._clock = clock

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()

    async def call(
        self, request: LlmRequest, timeout_seconds: float, log: list[CallSummary]
    ) -> ProviderResponse:
        key = request.key()
        if self.source is CallSource.RULES or request.provider == RULES:
            return await self._call_live(request, key, timeout_seconds, log, record=False)
        existing = await self._store.get(key) if self._store is not None else None
        if existing is not None:
            return self._answer_from(existing, request, log)
        if self.source is CallSource.REPLAY:
            log.append(self._summary(request, key, "record_missing", ErrorKind.RECORD_MISSING))
            raise ProviderError(ErrorKind.RECORD_MISSING, f"no recorded call for key {key} ({request.node})")
        return await self._call_live(request, key, timeout_seconds, log, record=self._store is not None)

    async def _call_live(
        self, request: LlmRequest, key: str, timeout_seconds: float, log: list[CallSummary], *, record: bool
    ) -> ProviderResponse:
        provider = self._providers.get(request.provider)
        if provider is None:
            error = ProviderError(ErrorKind.AUTH, f"provider {request.provider!r} is not configured")
            log.append(self._summary(request, key, "error", error.kind))
            raise error
        started = self._clock()
        try:
            response = await asyncio.wait_for(provider.complete(request), max(0.0, timeout_seconds))
        except TimeoutError as exc:
            latency = self._elapsed_ms(started)
            error = ProviderError(ErrorKind.TIMEOUT, f"{request.node} call exceeded the review deadline")
            await self._finish(request, key, log, record, CallStatus.TIMEOUT, None, error, latency)
            raise error from exc
        except ProviderError as error:
            await self._finish(
                request, key, log, record, CallStatus.ERROR, None, error, self._elapsed_ms(started)
            )
            raise
        # The offline reviewer is a pure function: its "latency" is 0, so its verdicts are
        # byte-identical in every run (a measured wall-clock duration would differ).
        latency = 0 if request.provider == RULES else self._elapsed_ms(started)
        await self._finish(request, key, log, record, CallStatus.OK, response, None, latency)
        return response

    async def _finish(
        self,
        request: LlmRequest,
        key: str,
        log: list[CallSummary],
        record: bool,
        status: CallStatus,
        response: ProviderResponse | None,
        error: ProviderError | None,
        latency_ms: int,
    ) -> None:
        kind = error.kind if error is not None else None
        log.append(
            CallSummary(
                node=request.node,
                provider=request.provider,
                model=request.model,
                status=str(status),
                input_tokens=response.input_tokens if response is not None else None,
                output_tokens=response.output_tokens if response is not None else None,
                latency_ms=latency_ms,
                error_kind=kind,
                record_key=key,
                over_network=request.provider != RULES,
            )
        )
        if record and self._store is not None:
            await self._store.put(
                CallRecord(
                    key=key,
                    provider=request.provider,
                    model=request.model,
                    prompt_version=request.prompt_version,
                    node=request.node,
                    request=request.canonical(),
                    status=status,
                    response=response.to_dict() if response is not None else None,
                    error_kind=kind,
                    error_message=error.message if error is not None else "",
                    http_status=error.status if error is not None else None,
                    latency_ms=latency_ms,
                )
            )

    def _answer_from(
        self, record: CallRecord, request: LlmRequest, log: list[CallSummary]
    ) -> ProviderResponse:
        response = ProviderResponse.from_dict(record.response) if record.response is not None else None
        log.append(
            CallSummary(
                node=request.node,
                provider=request.provider,
                model=request.model,
                status=str(record.status),
                input_tokens=response.input_tokens if response is not None else None,
                output_tokens=response.output_tokens if response is not None else None,
                latency_ms=record.latency_ms,
                error_kind=record.error_kind,
                record_key=record.key,
                over_network=False,
            )
        )
        if record.status is CallStatus.OK and response is not None:
            return response
        kind = record.error_kind or (
            ErrorKind.TIMEOUT if record.status is CallStatus.TIMEOUT else ErrorKind.SERVER_ERROR
        )
        raise ProviderError(kind, record.error_message or f"recorded {record.status}", record.http_status)

    def _summary(self, request: LlmRequest, key: str, status: str, kind: ErrorKind | None) -> CallSummary:
        return CallSummary(
            node=request.node,
            provider=request.provider,
            model=request.model,
            status=status,
            error_kind=kind,
            record_key=key,
        )

    def _elapsed_ms(self, started: float) -> int:
        return max(0, round((self._clock() - started) * 1000))
