"""CHILD ONLY: turn candidate source into a loss under the project's contract, inside the sandboxed worker.

The code has passed the static gate (``gate.check_code``) before it gets here; it is executed with only
``torch``, ``F`` and ``math`` in scope and a short list of builtins, in a process that runs nothing else.
The accepted forms (the paper's method form reading ``self.beta``, the library form taking ``beta``, and a
classification loss ``f(logits, targets)``) are adapted to the loss contract by ``podisco.losses.forms``.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from podisco.discovery.boundary.gate import ALLOWED_BUILTINS, check_code
from podisco.losses.forms import LossFormError, as_classification_loss, as_preference_loss


class CandidateError(ValueError):
    """The candidate cannot be turned into a loss; the message is fed back to the proposer."""


def load_function(code: str) -> Callable:
    """The single function defined by ``code`` (re-checked by the gate: the worker trusts no caller)."""
    name = check_code(code)
    allowed = {k: getattr(builtins, k) for k in ALLOWED_BUILTINS if hasattr(builtins, k)}
    namespace: dict = {"__builtins__": allowed, "torch": torch, "F": F, "math": math}
    # Imports inside the code need __import__; give one that can only return the three vetted modules.
    modules = {"torch": torch, "torch.nn.functional": F, "math": math, "torch.nn": torch.nn}

    def vetted_import(module: str, globals=None, locals=None, fromlist=(), level=0):
        if module not in modules or level != 0:
            raise ImportError(f"import of {module!r} is not allowed")
        return modules[module] if fromlist else modules[module.split(".")[0]]

    allowed["__import__"] = vetted_import
    try:
        exec(compile(code, "<candidate>", "exec"), namespace)
    except Exception as error:
        raise CandidateError(f"defining the function failed: {type(error).__name__}: {error}") from error
    return namespace[name]


def preference_loss(code: str) -> Callable[..., torch.Tensor]:
    """The candidate as ``loss(pc, pr, rc, rr, *, beta, **extra) -> (B,)``."""
    try:
        return as_preference_loss(load_function(code))
    except LossFormError as error:
        raise CandidateError(str(error)) from error


def classification_loss(code: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The candidate as ``loss(logits (B, C), targets (B,)) -> (B,)``."""
    try:
        return as_classification_loss(load_function(code))
    except LossFormError as error:
        raise CandidateError(str(error)) from error
