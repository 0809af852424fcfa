"""Loss functions written in the forms people write them, adapted to the loss contract (docs/loss-contract.md).

- the paper's method form ``def f(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
  reference_rejected_logps)`` reading ``self.beta``;
- the library form ``def f(policy_chosen_logps, ..., reference_rejected_logps, beta)``;
- a classification loss ``def f(logits, targets)``.

``load_loss_file`` reads a user's own ``loss.py:NAME`` (``podisco train --loss``): a trusted file, imported like
a training script. Candidate code from a proposer never comes here; the sandboxed worker loads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

_PREFERENCE_ARGS = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps"


class LossFormError(ValueError):
    """A function that is not in one of the accepted forms; the message says which form is expected."""


def as_preference_loss(fn: Callable) -> Callable:
    """``fn`` as ``loss(pc, pr, rc, rr, *, beta, **extra) -> (B,)``."""
    params = list(inspect.signature(fn).parameters)
    if params and params[0] == "self":
        if len(params) != 5:
            raise LossFormError(f"the method must take (self, {_PREFERENCE_ARGS}); it takes ({', '.join(params)})")

        def method_form(pc, pr, rc, rr, *, beta: float, **extra):
            return fn(SimpleNamespace(beta=beta), pc, pr, rc, rr)

        wrapped = method_form
    elif len(params) == 5 and params[4] == "beta":

        def library_form(pc, pr, rc, rr, *, beta: float, **extra):
            return fn(pc, pr, rc, rr, beta=beta)

        wrapped = library_form
    else:
        raise LossFormError(
            f"a preference loss takes (self, {_PREFERENCE_ARGS}) and reads self.beta; "
            f"this one takes ({', '.join(params)})"
        )
    wrapped.__name__ = fn.__name__
    return wrapped


def as_classification_loss(fn: Callable) -> Callable:
    """``fn`` as ``loss(logits (B, C), targets (B,)) -> (B,)``."""
    params = list(inspect.signature(fn).parameters)
    if len(params) != 2:
        raise LossFormError(f"a classification loss takes (logits, targets); this one takes ({', '.join(params)})")
    return fn


def is_loss_file(spec: str) -> bool:
    return ".py:" in spec or spec.endswith(".py")


def load_loss_file(spec: str, classification: bool = False) -> tuple[str, Callable]:
    """``path.py:NAME`` (or ``path.py`` defining one function) -> (label, loss under the contract).

    The label names the code's hash too, so a cache keyed by it changes when the file does."""
    from podisco.errors import PodiscoError

    path_text, _, name = spec.partition(":") if ".py:" in spec else (spec, "", "")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise PodiscoError(f"loss file {path_text} does not exist")
    code = path.read_bytes()
    digest = hashlib.sha256(code).hexdigest()
    module_name = f"podisco_user_loss_{digest[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise PodiscoError(f"loss file {path} cannot be imported")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        raise PodiscoError(f"loss file {path} failed to import: {type(error).__name__}: {error}") from error
    functions = {n: v for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module_name}
    if name:
        if name not in functions:
            raise PodiscoError(f"{path} defines no function {name!r} (it defines: {', '.join(functions) or 'none'})")
        fn = functions[name]
    elif len(functions) == 1:
        fn = next(iter(functions.values()))
    else:
        raise PodiscoError(f"{path} defines {len(functions)} functions; name one as {path.name}:NAME")
    try:
        loss = as_classification_loss(fn) if classification else as_preference_loss(fn)
    except LossFormError as error:
        raise PodiscoError(f"{path}:{fn.__name__}: {error}") from error
    return f"{path.name}:{fn.__name__}@{digest[:8]}", loss
