"""The daily report's short briefing, written by gpt-4o-mini (§8.4), with a plain-text fallback.

The report is never held back by the LLM: no key, an API error or a timeout all give the basic
summary built from the figures, prefixed with why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Protocol

from openai import AsyncOpenAI

from services.notifier.daily_figures import DailyFigures, basic_summary, summary_prompt

DEFAULT_MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = (
    "You write CoinPilot's operations report for a paper-trading crypto bot on the Upbit market. "
    "From the figures given, write a short, concrete daily briefing of 3 to 5 lines in {language}. "
    "Rules: cite at least one number from the figures; never guess data that is missing, say it is "
    "missing; propose at most one parameter change, and only if the figures support it."
)


class SummaryKind(StrEnum):
    LLM = "llm"
    NO_KEY = "fallback_no_key"
    ERROR = "fallback_error"


class Summarizer(Protocol):
    async def summarize(self, figures: DailyFigures, report_date: date) -> str: ...


@dataclass(frozen=True, slots=True)
class Summary:
    text: str
    kind: SummaryKind


class OpenAiSummarizer:
    """Chat Completions through the official SDK; any failure propagates to ``write_summary``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str = DEFAULT_MODEL,
        temperature: float = 0.7,
        language: str = "Korean",
    ) -> None:
        self._client = client
        self._model = model
        self._temperature = temperature
        self._language = language

    async def summarize(self, figures: DailyFigures, report_date: date) -> str:
        completion = await self._client.chat.completions.create(
            model=self._model,
            temperature=self._temperature,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT.format(language=self._language)},
                {"role": "user", "content": summary_prompt(figures, report_date.isoformat())},
            ],
        )
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        if not text:
            raise ValueError("the model returned an empty summary")
        return text


async def write_summary(summarizer: Summarizer | None, figures: DailyFigures, report_date: date) -> Summary:
    """The LLM's briefing, or the basic summary saying why there is none."""
    if summarizer is None:
        return Summary(f"LLM summary unavailable (no API key). {basic_summary(figures)}", SummaryKind.NO_KEY)
    try:
        return Summary(await summarizer.summarize(figures, report_date), SummaryKind.LLM)
    except Exception as exc:  # any failure of an optional nicety must not stop the report
        reason = f"{type(exc).__name__}: {exc}"[:300]
        return Summary(f"LLM summary failed ({reason}). {basic_summary(figures)}", SummaryKind.ERROR)
