"""Export a discovered loss as a Python file that ``podisco train --loss loss.py:NAME`` loads.

An exported file is the candidate's function with the three imports it uses. Loading it is
``podisco.losses.forms.load_loss_file``: the user's own file, trusted like a training script, never the
discovery loop's candidate loader.
"""

from __future__ import annotations

from pathlib import Path

from podisco.discovery.archive import Attempt

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
