"""Export a discovered loss as a Python file, and load such a file as a loss (``--loss loss.py:NAME``).

An exported file is the candidate's function with the three imports it may use, so it passes the static
gate; loading goes through the gate again (a hand-edited file must stay within it). Loading runs the code in
the calling process: ``podisco train`` and ``podisco sweep`` do that at the user's request, never the
discovery loop.
"""

from __future__ import annotations

from pathlib import Path

from podisco.discovery.archive import Attempt
from podisco.errors import PodiscoError

_HEADER = '''"""{name}: discovered by podisco (run {run}, attempt {id}, generation {generation}).

Fitness {fitness} on {task} v{version}. Use it with: podisco train --loss {filename}:{name}

{thought}
"""

import math

import torch
import torch.nn.functional as F

'''


def export_attempt(attempt: Attempt, path: str | Path) -> Path:
    path = Path(path)
    fitness = f"{attempt.fitness:+.4f}" if attempt.fitness is not None else "not measured"
    thought = attempt.thought.replace('"""', "'''").strip()
    header = _HEADER.format(
        name=attempt.name,
        run=attempt.run_id,
        id=attempt.id,
        generation=attempt.generation,
        fitness=fitness,
        task=attempt.task,
        version=attempt.task_version,
        filename=path.name,
        thought=thought,
    )
    body = attempt.code.strip() + "\n"
    function_name = _function_name(body)
    if function_name != attempt.name:  # the file is addressed by the function's own name
        header = header.replace(f"{path.name}:{attempt.name}", f"{path.name}:{function_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body)
    return path


def _function_name(code: str) -> str:
    import ast

    return next(n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef))


def is_loss_file(spec: str) -> bool:
    return ".py:" in spec or spec.endswith(".py")


def load_loss_file(spec: str, classification: bool = False):
    """``path.py:NAME`` (or ``path.py`` with one function) -> (label, loss under the contract)."""
    from podisco.discovery.archive import code_hash
    from podisco.discovery.candidate import CandidateError, classification_loss, preference_loss
    from podisco.discovery.gate import GateError

    path_text, _, name = spec.partition(":") if ".py:" in spec else (spec, "", "")
    path = Path(path_text)
    if not path.is_file():
        raise PodiscoError(f"loss file {path} does not exist")
    code = path.read_text()
    try:
        fn = classification_loss(code) if classification else preference_loss(code)
    except (GateError, CandidateError) as error:
        raise PodiscoError(f"{path}: {error}") from error
    if name and fn.__name__ != name:
        raise PodiscoError(f"{path} defines {fn.__name__!r}, not {name!r}")
    # The label names the code too, so a cache keyed by it changes when the file does.
    return f"{path.name}:{fn.__name__}@{code_hash(code)[:8]}", fn
