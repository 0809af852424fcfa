"""A discovery run (digits task, llm proposer) against a loopback server that commits every fault we know.

Shared by tests/reliability and benchmarks/reliability.py. Each fault either is absorbed by the client's
retries or turns into an ``invalid`` attempt whose reason goes back to the model; the run never crashes.
"""

from __future__ import annotations

import json
from pathlib import Path

from podisco.discovery.archive import Archive
from podisco.discovery.loop import run_discovery
from podisco.discovery.proposers.llm import LLMProposer
from podisco.llm_client import ChatClient, LLMSettings
from tests.discovery.configs import make_config
from tests.discovery.fake_llm_server import FakeLLMServer, drop, empty_choices, raw, reply, sleep, status


def _loss(name: str, smoothing: float) -> str:
    code = (
        f"def {name}(logits, targets):\n"
        f"    return F.cross_entropy(logits, targets, reduction='none', label_smoothing={smoothing})\n"
    )
    return json.dumps({"thought": "smoothing", "name": name, "code": code})


NON_UTF8 = b'{"choices": [{"message": {"content": "\xff\xfe bad"}}]}'
# (fault, actions the server plays, what the loop should make of it)
FAULTS = [
    ("429 with Retry-After", [status(429, headers={"Retry-After": "1"})], "retried"),
    ("500", [status(500)], "retried"),
    ("503", [status(503)], "retried"),
    ("slow reply past the timeout", [sleep(3.0, then=reply("late"))], "retried"),
    ("dropped connection", [drop()], "retried"),
    ("truncated JSON body", [raw(b'{"choices": [{"message": {"content": "{\\"thou')], "retried"),
    ("empty choices list", [empty_choices()], "retried"),
    ("refusal", [reply("I'm sorry, but I can't help with creating that.")], "invalid, fed back"),
    ("reply of 1 MB", [reply("x" * 1_000_000)], "invalid, fed back"),
    (
        "non-UTF-8 bytes",
        [raw(b'{"choices": [{"message": {"content": "\\xff\\xfe \xff\xfe bad"}}]}')],
        "invalid, fed back",
    ),
    (
        "truncated proposal JSON",
        [reply('{"thought": "t", "name": "cut", "code": "def cut(logits')],
        "invalid, fed back",
    ),
]


def run_with_faults(root: Path) -> dict:
    """One run whose proposals meet every fault in turn; returns counts and the archive's verdicts."""
    script = []
    for i, (_, actions, _) in enumerate(FAULTS):
        script += actions
        if FAULTS[i][2] == "retried":  # the retry then gets a good proposal
            script.append(reply(_loss(f"smooth_{i}", 0.01 * (i + 1))))
    config = make_config(
        "digits",
        generations=len(FAULTS),  # one proposal per generation: one fault each
        population=1,
        workers=2,
        threads=1,
        seeds=(0,),
        reevaluate_top=0,
        epochs=2,
        allow_weak_isolation=True,
    )
    with FakeLLMServer(script, default=lambda request: reply(_loss("spare", 0.2))) as server:
        settings = LLMSettings(base_url=server.base_url, model="fake", timeout_s=1.0, backoff_s=0.01, max_backoff_s=1.0)
        run_id = run_discovery(config, root, log=lambda message: None, proposer=LLMProposer(ChatClient(settings)))
        requests = len(server.requests)
    archive = Archive(root / "archive.sqlite")
    attempts = [a for a in archive.attempts(run_id) if a.generation > 0]
    feedback = "\n".join(m["content"] for m in archive.messages(run_id) if m["role"] == "user")
    return {
        "run_id": run_id,
        "requests": requests,
        "attempts": attempts,
        "finished": archive.run(run_id)["finished"] is not None,
        "feedback": feedback,
    }
