"""An LLM judge over the same OpenAI-compatible client as the proposer, with a disk cache and strict parsers.

The cache key is (judge model, system prompt, user prompt): the same question, answer and judge cost nothing
the second time. Ratings follow MT-Bench's single-answer format ("[[7]]"), verdicts its pairwise format
("[[A]]", "[[B]]", "[[C]]" for a tie); a reply without exactly one well-formed mark is rejected, not guessed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from podisco.cache import atomic_output, cache_home
from podisco.errors import PodiscoError
from podisco.llm_client import ChatClient, LLMSettings, llm_configured, settings_from_env


class JudgeFormatError(PodiscoError, ValueError):
    """The judge's reply has no (or more than one) well-formed rating or verdict."""


T = TypeVar("T")
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def parse_rating(reply: str, low: float = 1.0, high: float = 10.0) -> float:
    marks = _RATING.findall(reply)
    if len(marks) != 1:
        raise JudgeFormatError(f"expected exactly one rating like [[7]], found {len(marks)} in {reply[:200]!r}")
    value = float(marks[0])
    if not low <= value <= high:
        raise JudgeFormatError(f"rating {value:g} is outside {low:g}..{high:g}")
    return value


def parse_verdict(reply: str) -> str:
    """'A', 'B' or 'C' (tie)."""
    marks = set(_VERDICT.findall(reply))
    if len(marks) != 1:
        raise JudgeFormatError(f"expected exactly one verdict [[A]], [[B]] or [[C]], found {sorted(marks)}")
    return marks.pop()


@dataclass
class JudgeStats:
    requests: int = 0
    cache_hits: int = 0
    malformed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)


class Judge:
    def __init__(self, settings: LLMSettings, cache_dir: str | Path | None = None, client: ChatClient | None = None):
        # The judge answers in prose ending in [[7]] or [[A]]: JSON mode would forbid exactly that format.
        settings = dataclasses.replace(settings, json_mode=False)
        self.settings = settings
        self.client = client or ChatClient(settings)
        self.cache_dir = Path(cache_dir or cache_home() / "judge")
        self.stats = JudgeStats()

    def _path(self, system: str, prompt: str) -> Path:
        key = hashlib.sha256(json.dumps([self.settings.model, system, prompt]).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def ask(self, system: str, prompt: str) -> str:
        path = self._path(system, prompt)
        if path.exists():
            self.stats.cache_hits += 1
            return json.loads(path.read_text())["reply"]
        reply = self.client.chat([{"role": "system", "content": system}, {"role": "user", "content": prompt}])
        self.stats.requests += 1
        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({"model": self.settings.model, "reply": reply.text}))
        return reply.text

    def _parsed(self, parse: Callable[[str], T], system: str, prompt: str) -> T | None:
        """The parsed reply, or None (counted, reason kept) when the judge's reply is malformed. A malformed
        reply leaves the cache, so that judging again asks again instead of repeating the same failure."""
        try:
            return parse(self.ask(system, prompt))
        except JudgeFormatError as error:
            self.stats.malformed += 1
            self.stats.errors.append(str(error))
            self._path(system, prompt).unlink(missing_ok=True)
            return None

    def rating(self, system: str, prompt: str) -> float | None:
        """A 1-10 rating, or None when the reply is malformed."""
        return self._parsed(parse_rating, system, prompt)

    def verdict(self, system: str, prompt: str) -> str | None:
        """'A', 'B' or 'C', or None when the reply is malformed."""
        return self._parsed(parse_verdict, system, prompt)


def make_judge(model: str | None = None, base_url: str | None = None, cache_dir: str | Path | None = None) -> Judge:
    """A judge from arguments or ``PODISCO_LLM_MODEL`` / ``PODISCO_LLM_BASE_URL``, grading at temperature 0;
    refuses at once (not after hours of training) when no call could succeed."""
    settings = settings_from_env(model, base_url)
    settings.temperature = 0.0  # grading should not be a lottery
    if not llm_configured(settings):
        raise PodiscoError(
            f"no usable LLM judge: {settings.base_url} needs ${settings.api_key_env}; or name a local "
            "OpenAI-compatible server with --judge-base-url (and --judge-model)"
        )
    return Judge(settings, cache_dir or None)
