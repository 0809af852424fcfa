"""Export a discovered loss as a Python file: for ``podisco train --loss loss.py:NAME``, or for TRL.

An exported file is the candidate's function with the three imports it uses. Loading it is
``podisco.losses.forms.load_loss_file``: the user's own file, trusted like a training script, never the
discovery loop's candidate loader.

``--format trl`` writes the same function plus what TRL 1.16's ``DPOTrainer`` needs, still importing only torch
and math: ``per_pair_loss`` (the candidate under the loss contract, float32 or wider), the loss hook copied from
``podisco.integrations.dpo_hook`` (the code ``PodiscoDPOTrainer`` runs) and ``make_trainer_class(DPOTrainer)``,
so that someone without podisco can train with it.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from podisco.discovery.archive import Attempt
from podisco.errors import PodiscoError
from podisco.integrations import dpo_hook

FORMATS = ("podisco", "trl")

_HEADER = '''"""{name}: discovered by podisco (run {run}, attempt {id}, generation {generation}).

Fitness {fitness} on {task} v{version}. Use it with: podisco train --loss {filename}:{name}

{thought}
"""

import math

import torch
import torch.nn.functional as F

'''

_TRL_HEADER = '''"""{name}: discovered by podisco (run {run}, attempt {id}, generation {generation}), for TRL.

Fitness {fitness} on {task} v{version}. This file imports only torch and math; podisco need not be installed.
Written for TRL 1.16 (trl/trainer/dpo_trainer.py: DPOTrainer._compute_loss):

    from trl import DPOConfig, DPOTrainer
    from {module} import make_trainer_class

    Trainer = make_trainer_class(DPOTrainer)  # a DPOTrainer that trains with {name} at DPOConfig.beta
    trainer = Trainer(model=model, args=DPOConfig(beta=0.1, ...), train_dataset=pairs, processing_class=tokenizer)
    trainer.train()

TRL's data handling, reference log-probs and logged metrics are unchanged; only the loss differs. Leave
loss_type, loss_weights, f_divergence_type, ld_alpha and use_weighting at their defaults (they configure TRL's
own loss; the trainer refuses them). ``per_pair_loss(policy_chosen_logps, policy_rejected_logps,
reference_chosen_logps, reference_rejected_logps, beta=0.1)`` gives the per-pair losses (B,) on their own, and
``podisco train --loss {filename}:{name}`` reads this file too.

{thought}
"""

import math

import torch
import torch.nn.functional as F

'''

_TRL_ADAPTER = '''

class _Beta:
    """The method form reads self.beta."""

    def __init__(self, beta):
        self.beta = beta


def per_pair_loss(
    policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, *, beta, **extra
):
    """{name} per pair, shape (B,), from log-probs summed over completion tokens; computed in float32 or wider.

    ``extra`` (chosen_lengths, rejected_lengths, ...) is accepted and ignored, as the trainer always passes it.
    """
    inputs = (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    dtype = torch.float32
    for tensor in inputs:
        dtype = torch.promote_types(dtype, tensor.dtype)
    inputs = [tensor.to(dtype) for tensor in inputs]
    return {call}


'''

_TRL_TRAINER = '''

def make_trainer_class(dpo_trainer_class):
    """A subclass of ``dpo_trainer_class`` (TRL's ``DPOTrainer``) whose loss is ``per_pair_loss`` at args.beta.

    It overrides only ``_compute_loss``: TRL's own code runs (metrics included) and its loss is replaced.
    """

    class DiscoveredDPOTrainer(dpo_trainer_class):
        def _compute_loss(self, model, inputs, return_outputs):
            return compute_dpo_loss(self, super()._compute_loss, model, inputs, return_outputs, per_pair_loss, {})

    return DiscoveredDPOTrainer
'''

# Names the TRL file defines besides the candidate's function (the gate refuses candidate names with a leading
# underscore, so _Beta cannot clash).
_TRL_NAMES = ("per_pair_loss", "make_trainer_class", "compute_dpo_loss", "unsupported_setting")


def export_attempt(attempt: Attempt, path: str | Path, format: str = "podisco") -> Path:
    """Write ``attempt``'s loss to ``path``: podisco's ``loss.py:NAME`` file, or (``format="trl"``) a file for TRL."""
    if format == "trl":
        return export_attempt_trl(attempt, path)
    if format != "podisco":
        raise PodiscoError(f"unknown export format {format!r}; one of {', '.join(FORMATS)}")
    path = Path(path)
    header = _HEADER.format(**_fields(attempt, path), name=attempt.name)
    body = attempt.code.strip() + "\n"
    function_name = _function_name(body)
    if function_name != attempt.name:  # the file is addressed by the function's own name
        header = header.replace(f"{path.name}:{attempt.name}", f"{path.name}:{function_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body)
    return path


def export_attempt_trl(attempt: Attempt, path: str | Path) -> Path:
    """Write ``attempt``'s loss as a stand-alone file for TRL 1.16's ``DPOTrainer`` (imports: torch, math).

    The file defines the candidate's function, ``per_pair_loss`` (the loss contract), the loss hook
    ``compute_dpo_loss`` (the source of ``podisco.integrations.dpo_hook``, which ``PodiscoDPOTrainer`` runs) and
    ``make_trainer_class(DPOTrainer)``; its docstring shows how to use them. Only a preference loss can be exported
    this way.
    """
    path = Path(path)
    body = attempt.code.strip() + "\n"
    function_name = _function_name(body)
    call = _contract_call(body, function_name, attempt)
    defined = {n.name for n in ast.parse(body).body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    clash = sorted(defined & set(_TRL_NAMES))
    if clash:
        raise PodiscoError(
            f"attempt {attempt.id} defines {clash[0]!r}, a name the TRL file needs; use --format podisco"
        )
    header = _TRL_HEADER.format(**_fields(attempt, path), name=function_name, module=path.stem)
    hook = "\n\n".join(inspect.getsource(fn) for fn in (dpo_hook.unsupported_setting, dpo_hook.compute_dpo_loss))
    text = header + body + _TRL_ADAPTER.format(name=function_name, call=call) + hook + _TRL_TRAINER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fields(attempt: Attempt, path: Path) -> dict[str, object]:
    return {
        "run": attempt.run_id,
        "id": attempt.id,
        "generation": attempt.generation,
        "fitness": f"{attempt.fitness:+.4f}" if attempt.fitness is not None else "not measured",
        "task": attempt.task,
        "version": attempt.task_version,
        "filename": path.name,
        "thought": attempt.thought.replace('"""', "'''").strip(),
    }


def _contract_call(code: str, function_name: str, attempt: Attempt) -> str:
    """How ``per_pair_loss`` calls the candidate: the paper's method form (reads self.beta) or the library form
    (beta last), the two preference forms ``podisco.losses.forms`` accepts."""
    function = next(n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef) and n.name == function_name)
    params = [a.arg for a in function.args.args]
    if len(params) == 5 and params[0] == "self":
        return f"{function_name}(_Beta(beta), *inputs)"
    if len(params) == 5 and params[4] == "beta":
        return f"{function_name}(*inputs, beta=beta)"
    raise PodiscoError(
        f"attempt {attempt.id} ({function_name}({', '.join(params)})) is not a preference loss; only a preference "
        "loss can be exported for TRL"
    )


def _function_name(code: str) -> str:
    return next(n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef))
