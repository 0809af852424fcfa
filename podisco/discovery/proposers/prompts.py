"""The proposer's texts: the paper-mode conversation and the archive-mode digest (seeds: tasks/seeds.py).

Paper mode follows the paper's protocol (docs/paper.md §1, App. A): a system prompt with the role, the JSON
reply format with ``thought`` / ``name`` / ``code``, the fixed method signature with constants inside the
function and ``self.beta``; a first message listing the seed losses with their fitness; then one feedback
message per proposal. The wording is ours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from podisco.discovery.archive import Attempt
from podisco.tasks.base import Kind
from podisco.tasks.seeds import CLASSIFICATION_SIGNATURE, PREFERENCE_SIGNATURE

# The reply object as a JSON Schema, for endpoints with structured output: SmolLM2-135M parsed 0 of 4 replies in
# plain JSON mode (it sent only "thought") and 3 of 4 with a schema; without the name's pattern it then put code
# into "name" (2 of 4 replies, digits). A grammar-constrained server (llama.cpp, vLLM) enforces the pattern.
REPLY_SCHEMA = {
    "type": "object",
    "properties": {
        "thought": {"type": "string"},
        "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
        "code": {"type": "string"},
    },
    "required": ["thought", "name", "code"],
    "additionalProperties": False,
}


def system_prompt(kind: Kind, fitness_meaning: str, baseline: str = "") -> str:
    if kind == "classification":
        subject = "classification losses for training an image classifier"
        signature = CLASSIFICATION_SIGNATURE
        contract = "Return one loss per example (shape (B,)); logits are (B, C), targets are class indices (B,)."
    else:
        subject = "objective functions for offline preference optimization of language models"
        signature = PREFERENCE_SIGNATURE
        contract = (
            "The inputs are the summed log-probabilities of the chosen and rejected completions under the policy "
            "and the frozen reference model, one value per pair. Return one loss per pair (shape (B,)), not their "
            "mean. self.beta is the strength of the KL regularisation; read it, do not define it."
        )
    against = ""
    if baseline:
        against = f" The baseline is {baseline}: a loss that only behaves like DPO at another β cannot beat it."
    return f"""You are a machine-learning researcher inventing and testing new {subject}.
Each time you answer, propose one new loss function, written as Python code.

Reply with a single JSON object and nothing else, with these keys:
- "thought": your reasoning: what the new loss does differently and why it should do better;
- "name": a short snake_case name for it;
- "code": the Python source of exactly one function with this signature:
  {signature}

Rules for the code: torch, F (torch.nn.functional) and math are available; use only tensor operations from
them; no other imports, no I/O. Put every constant inside the function. {contract}

Your loss is checked, then used to train a model, and scored: the fitness is the {fitness_meaning}.{against}
Aim for losses that beat every loss seen so far; be creative, and learn from what did and did not work."""


def first_message(evaluated: Sequence[Attempt]) -> str:
    entries = [{"name": a.name, "code": a.code, "fitness": _round(a.fitness)} for a in evaluated]
    return (
        "Here are the loss functions evaluated so far, with their fitness:\n"
        + json.dumps(entries, indent=1)
        + "\n\nPropose your first new loss function."
    )


def feedback_message(attempt: Attempt, best: float | None) -> str:
    """The paper's feedback for each outcome: fitness, invalid code, failed training, duplicate. A resubmission
    is answered with the earlier attempt and its outcome, so the model learns something new from it."""
    if attempt.status == "evaluated" and attempt.fitness is None:  # stopped at stage 0: results.stage0_text
        return f"Your loss {attempt.name!r} was {_sentence(attempt.error or 'not fully evaluated')}"
    if attempt.status == "evaluated":
        ci = f" +- {attempt.fitness_stderr:.4f} (standard error)" if attempt.fitness_stderr else ""
        best_text = f" The best so far is {best:.4f}." if best is not None else ""
        return f"Your loss {attempt.name!r} was trained and evaluated: fitness {attempt.fitness:.4f}{ci}.{best_text}"
    if attempt.status == "duplicate":
        fitness = f", which scored fitness {attempt.fitness:.4f}" if attempt.fitness is not None else ""
        how = "is the same code as" if attempt.error == SAME_CODE else "behaves like"
        return (
            f"Your loss {attempt.name!r} {how} {_earlier(attempt.duplicate_of or '')}{fitness}, so it was not "
            "trained again. Propose something substantially different."
        )
    if attempt.status == "invalid":
        reason = _sentence(_first_lines(attempt.error))
        return f"Your code for {attempt.name!r} could not be used: {reason} Please fix it."
    return f"Training or evaluating {attempt.name!r} failed: {_sentence(_first_lines(attempt.error))}"


# the error text of an attempt whose code is identical to an earlier one (loop._admit)
SAME_CODE = "the same code as an earlier attempt"


def _earlier(duplicate_of: str) -> str:
    """``attempt:12 name`` (an archive entry) -> ``attempt 12 (name)``; a registered loss's label as it is."""
    if duplicate_of.startswith("attempt:"):
        number, _, name = duplicate_of[len("attempt:") :].partition(" ")
        return f"attempt {number} ({name})" if name else f"attempt {number}"
    return duplicate_of


def _sentence(text: str) -> str:
    """End ``text`` with a full stop, so the next sentence does not run into it ("got (8, 10) Please fix it")."""
    text = text.rstrip()
    return text if not text or text[-1] in ".!?" else text + "."


def next_request(generation_full: bool) -> str:
    if generation_full:
        return "Propose the next loss function."
    return "While that one is evaluated, propose another loss function, different from your last one."


def example_reply(name: str, code: str) -> str:
    """One worked example of a valid reply (archive mode shows it: a small model copies a format it has seen)."""
    thought = f"A worked example of the format only: {name}, one of the losses already measured."
    return json.dumps({"thought": thought, "name": name, "code": code})


def archive_digest(
    top: Sequence[Attempt],
    diverse: Sequence[Attempt],
    errors: Sequence[Attempt],
    proposed: Sequence[str],
    example: str = "",
) -> str:
    """Archive mode: one self-contained message per request, so long runs never overflow the context."""

    def entry(a: Attempt) -> dict:
        out = {"name": a.name, "fitness": _round(a.fitness), "code": a.code}
        if a.fitness_stderr:
            out["fitness_stderr"] = _round(a.fitness_stderr)
        if a.shape:
            out["shape"] = {
                "extrema": [f"{e['kind']} at rho={e['rho']:.3g}" for e in a.shape.get("extrema", [])],
                "dloss/drho at 0": _round(a.shape.get("grad_at_zero")),
                "convex": a.shape.get("convex"),
                "nearest known": [f"{n} ({d:.2f})" for n, d in a.shape.get("nearest_known", [])],
            }
        dynamics = (a.metrics or {}).get("dynamics")
        if dynamics:
            out["training"] = dynamics
        return out

    parts = ["The best losses so far:", json.dumps([entry(a) for a in top], indent=1)]
    if diverse:
        parts += ["Other losses that behave differently:", json.dumps([entry(a) for a in diverse], indent=1)]
    if errors:
        parts.append("Recent mistakes to avoid:")
        parts += [f"- {a.name}: {a.status}: {_first_lines(a.error or a.duplicate_of or '')}" for a in errors]
    if proposed:
        parts.append("Already proposed in this round (do not repeat): " + ", ".join(proposed))
    if example:
        parts += ["A valid reply looks like this (the format, not an idea to repeat):", example]
    parts.append("Propose one new loss function.")
    return "\n".join(parts)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _first_lines(text: str | None, limit: int = 2500) -> str:  # room for the gate's list of vetted names
    text = (text or "").strip()
    return text if len(text) <= limit else text[:limit] + " ..."
