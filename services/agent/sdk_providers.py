"""The SDK-backed providers (imported only when a model is configured: the SDKs import slowly).

* :class:`AnthropicProvider` - the ``anthropic`` SDK (``AsyncAnthropic``), structured output via a
  tool whose ``input_schema`` is the verdict schema and ``tool_choice`` forcing that tool.
* :class:`OpenAIProvider` - the ``openai`` SDK (``AsyncOpenAI``) chat completions with a forced
  function tool.

Every SDK failure leaves here as a :class:`~services.agent.providers.ProviderError` carrying a
structured :class:`~services.agent.guard_rules.ErrorKind`; nothing downstream inspects error text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anthropic
import openai

from services.agent.guard_rules import ErrorKind
from services.agent.providers import LlmRequest, ProviderError, ProviderResponse, classify_status
from services.agent.routing import ANTHROPIC, OPENAI


def _anthropic_low_credit(status: int, error_type: str | None, message: str | None) -> bool:
    """Anthropic reports an empty balance as HTTP 400 ``invalid_request_error`` (no dedicated type
    or code), so this one case has to read the provider's message; it is read here, at the
    adapter, and turned into ``ErrorKind.LOW_CREDIT`` - the guardrails never see the text."""
    return (
        status == 400
        and error_type == "invalid_request_error"
        and "credit balance" in (message or "").lower()
    )


class AnthropicProvider:
    name = ANTHROPIC

    def __init__(
        self, *, api_key: str, base_url: str | None, timeout_seconds: float, max_retries: int
    ) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=max_retries
        )

    async def complete(self, request: LlmRequest) -> ProviderResponse:
        try:
            message = await self._client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens,
                system=request.system,
                messages=[{"role": "user", "content": request.user}],
                tools=[
                    {
                        "name": request.tool_name,
                        "description": request.tool_description,
                        "input_schema": dict(request.schema),  # type: ignore[typeddict-item]
                    }
                ],
                tool_choice={"type": "tool", "name": request.tool_name},
                # SDK 1.x+ dropped sampling parameters from the signature; the API still takes
                # them for the 4.5 models we use, and the reviewers run at temperature 0 (§5.3).
                extra_body={"temperature": request.temperature} if request.temperature is not None else None,
            )
        except anthropic.APITimeoutError as exc:
            raise ProviderError(ErrorKind.TIMEOUT, f"anthropic timeout: {exc}") from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError(ErrorKind.CONNECTION, f"anthropic connection error: {exc}") from exc
        except anthropic.APIStatusError as exc:
            api_message = exc.api_message or ""
            kind = (
                ErrorKind.LOW_CREDIT
                if _anthropic_low_credit(exc.status_code, exc.type, api_message)
                else classify_status(exc.status_code, exc.type, exc.error_code)
            )
            text = f"anthropic HTTP {exc.status_code} {exc.type or 'error'}: {api_message}"
            raise ProviderError(kind, text, exc.status_code) from exc
        except anthropic.AnthropicError as exc:
            raise ProviderError(ErrorKind.INVALID_OUTPUT, f"anthropic response unusable: {exc}") from exc
        output: dict[str, Any] | None = None
        texts: list[str] = []
        for block in message.content:
            if block.type == "tool_use" and block.name == request.tool_name:
                output = dict(block.input) if isinstance(block.input, Mapping) else None
            elif block.type == "text":
                texts.append(block.text)
        return ProviderResponse(
            output=output,
            text="\n".join(texts),
            stop_reason=message.stop_reason,
            model=message.model,
            response_id=message.id,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        )

    async def close(self) -> None:
        await self._client.close()


class OpenAIProvider:
    name = OPENAI

    def __init__(
        self, *, api_key: str, base_url: str | None, timeout_seconds: float, max_retries: int
    ) -> None:
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=max_retries
        )

    async def complete(self, request: LlmRequest) -> ProviderResponse:
        try:
            completion = await self._client.chat.completions.create(
                model=request.model,
                temperature=request.temperature,
                max_completion_tokens=request.max_tokens,
                messages=[
                    {"role": "system", "content": request.system},
                    {"role": "user", "content": request.user},
                ],
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": request.tool_name,
                            "description": request.tool_description,
                            "parameters": dict(request.schema),
                        },
                    }
                ],
                tool_choice={"type": "function", "function": {"name": request.tool_name}},
            )
        except openai.APITimeoutError as exc:
            raise ProviderError(ErrorKind.TIMEOUT, f"openai timeout: {exc}") from exc
        except openai.APIConnectionError as exc:
            raise ProviderError(ErrorKind.CONNECTION, f"openai connection error: {exc}") from exc
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, Mapping) else {}
            kind = classify_status(exc.status_code, body.get("type"), body.get("code"))
            text = f"openai HTTP {exc.status_code} {body.get('type') or 'error'}: {body.get('message', '')}"
            raise ProviderError(kind, text, exc.status_code) from exc
        except openai.OpenAIError as exc:
            raise ProviderError(ErrorKind.INVALID_OUTPUT, f"openai response unusable: {exc}") from exc
        usage = completion.usage
        if not completion.choices:
            return ProviderResponse(
                output=None,
                model=completion.model,
                response_id=completion.id,
                output_error="no choices in the completion",
            )
        choice = completion.choices[0]
        output: dict[str, Any] | None = None
        output_error = ""
        for call in choice.message.tool_calls or ():
            function = getattr(call, "function", None)
            if function is None or function.name != request.tool_name:
                continue
            try:
                parsed = json.loads(function.arguments)
            except json.JSONDecodeError as exc:
                output_error = f"tool arguments are not JSON: {exc}"
                continue
            if isinstance(parsed, dict):
                output = parsed
            else:
                output_error = "tool arguments are not a JSON object"
        return ProviderResponse(
            output=output,
            text=choice.message.content or "",
            stop_reason=choice.finish_reason,
            model=completion.model,
            response_id=completion.id,
            input_tokens=usage.prompt_tokens if usage is not None else None,
            output_tokens=usage.completion_tokens if usage is not None else None,
            output_error=output_error,
        )

    async def close(self) -> None:
        await self._client.close()
