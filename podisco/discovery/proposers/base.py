"""The Proposer protocol and what a proposer exchanges with the loop.

Three kinds implement it: ``llm`` (llm.py: the paper's method over an OpenAI-compatible endpoint, in ``paper``
or ``archive`` mode), ``evolve`` (evolve.py: mutation and crossover of archive code; needs no LLM) and
``replay`` (replay.py: recorded replies). A proposer returns raw material (a reply text, or code); the loop
parses and gates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from podisco.discovery.archive import Archive, Attempt
from podisco.tasks.base import Task


@dataclass
class Proposal:
    """What a proposer hands the loop: either ``reply`` (text still to be parsed) or name/thought/code."""

    reply: str | None = None
    name: str = ""
    thought: str = ""
    code: str = ""
    parents: list[int] = field(default_factory=list)
    # the LLM call behind ``reply``: tokens in (prompt) and out (completion), HTTP requests, latency_s (all
    # attempts), the response format used (mode) and finish_reason; stored with the attempt
    llm_tokens: dict | None = None
    error: str | None = None  # the proposer could not produce anything (e.g. the LLM endpoint failed)


@dataclass
class Context:
    run_id: str
    task: Task
    generation: int
    slot: int
    population: int
    archive: Archive
    baseline: str = ""  # what fitness 0 means: "DPO at its best β=0.1 of {...}" (baseline.Baseline.describe)


class ReplayExhausted(Exception):
    """A replay file has no more records."""


class Proposer(Protocol):
    kind: str  # "llm", "evolve", "replay" (stored with every attempt)

    def propose(self, context: Context) -> Proposal:
        """One proposal for ``context``'s slot; raise ReplayExhausted when there are no more."""
        ...

    def feedback(self, context: Context, attempts: Sequence[Attempt]) -> None:
        """The outcomes of a finished batch of proposals."""
        ...


def seed_count(context: Context) -> int:
    return sum(1 for a in context.archive.attempts(context.run_id) if a.generation == 0)
