"""``replay``: recorded replies from a JSONL file, used in order (tests, re-running a published run)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from podisco.discovery.archive import Attempt
from podisco.discovery.proposers.base import Context, Proposal, ReplayExhausted, seed_count


class ReplayProposer:
    """Each record is ``{"content": <raw LLM reply>}`` or ``{"name", "thought", "code"}``, used in order."""

    kind = "replay"

    def __init__(self, path: str | Path) -> None:
        self.records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

    def propose(self, context: Context) -> Proposal:
        index = len(context.archive.attempts(context.run_id)) - seed_count(context)
        if index >= len(self.records):
            raise ReplayExhausted(f"the replay file has {len(self.records)} records, all used")
        record = self.records[index]
        if "content" in record:
            return Proposal(reply=record["content"])
        return Proposal(name=record["name"], thought=record.get("thought", ""), code=record["code"])

    def feedback(self, context: Context, attempts: Sequence[Attempt]) -> None:
        pass
