"""Versioned prompt files (``prompts/<node>_v<N>.md``) and the messages rendered from them.

A prompt file has ``## system``, ``## user`` (a ``string.Template``) and, for the Analyst,
``## regime <NAME>`` sections. The sha256 of the files is recorded with every verdict
(``AiDecision.prompt_hash``) and is part of every recorded call's key, so an edited prompt can
never be answered from a recording made with the old one. Loading reads files (the edge does it
once at start); rendering is pure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from coinpilot.contracts import Regime
from coinpilot.symbols import quote_currency
from services.agent.core import ReviewPlan

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class RegimeText:
    description: str
    guidance: str


@dataclass(frozen=True, slots=True)
class PromptFile:
    name: str
    system: str
    user: Template
    regimes: dict[str, RegimeText]
    sha256: str


@dataclass(frozen=True, slots=True)
class PromptSet:
    analyst: PromptFile
    guardian: PromptFile

    @property
    def version(self) -> str:
        return f"{self.analyst.name}+{self.guardian.name}"

    @property
    def sha256(self) -> str:
        """One hash for the pair, recorded as ``AiDecision.prompt_hash``."""
        joined = f"{self.analyst.name}:{self.analyst.sha256}\n{self.guardian.name}:{self.guardian.sha256}"
        return hashlib.sha256(joined.encode()).hexdigest()


def parse_prompt(name: str, text: str) -> PromptFile:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    body = {k: "\n".join(v).strip() for k, v in sections.items()}
    if "system" not in body or "user" not in body:
        raise ValueError(f"prompt {name} needs '## system' and '## user' sections")
    regimes: dict[str, RegimeText] = {}
    for key, value in body.items():
        if key.startswith("regime "):
            fields = dict(line.split(":", 1) for line in value.splitlines() if ":" in line)
            regimes[key.split(" ", 1)[1].strip()] = RegimeText(
                fields.get("description", "").strip(), fields.get("guidance", "").strip()
            )
    return PromptFile(
        name=name,
        system=body["system"],
        user=Template(body["user"]),
        regimes=regimes,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def load_prompts(version: str = DEFAULT_VERSION, directory: Path = PROMPTS_DIR) -> PromptSet:
    files = {}
    for node in ("analyst", "guardian"):
        name = f"{node}_{version}"
        files[node] = parse_prompt(name, (directory / f"{name}.md").read_text(encoding="utf-8"))
    return PromptSet(analyst=files["analyst"], guardian=files["guardian"])


def canonical_json(value: Any) -> str:
    """Stable JSON for prompts and keys: insertion order kept, non-ASCII kept, NaN/inf as strings."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True, separators=(", ", ": "))


def format_price(symbol: str, price: float) -> str:
    currency = quote_currency(symbol)
    digits = 0 if currency == "KRW" else 2
    return f"{price:,.{digits}f} {currency}"


def analyst_user_message(plan: ReviewPlan, prompt: PromptFile) -> str:
    regime = plan.order.regime
    text = prompt.regimes.get(str(regime)) or prompt.regimes.get(str(Regime.UNKNOWN)) or RegimeText("", "")
    features = plan.patterns.as_dict()
    diff = plan.payload.get("regime_diff_pct") or 0.0
    return prompt.user.substitute(
        regime=str(regime),
        regime_description=text.description,
        regime_guidance=text.guidance,
        regime_diff_pct=f"{diff:.2f}",
        symbol=plan.order.symbol,
        price=format_price(plan.order.symbol, float(plan.order.reference_price)),
        context_len=plan.context_len,
        pattern_lines="\n".join(f"- {k}: {v}" for k, v in features.items()),
        pattern_json=canonical_json(features),
        ohlc_json=canonical_json([b.as_ohlc() for b in plan.bars]),
    )


def guardian_user_message(plan: ReviewPlan, prompt: PromptFile) -> str:
    return prompt.user.substitute(symbol=plan.order.symbol, payload_json=canonical_json(dict(plan.payload)))
