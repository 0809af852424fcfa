"""The unit battery a candidate loss must pass before any training (run inside the sandboxed worker).

Beyond the paper's check (a forward pass without NaN): the output is one loss per pair, loss and gradients
are finite on typical and extreme inputs in float32 and bfloat16, the gradient reaches the policy log-probs
(a loss that cannot move the policy cannot be trained), the output follows the batch size, and two calls
agree. Each failure is a sentence the proposer can act on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class BatteryError(ValueError):
    """The candidate failed a check; the message says which and what to change."""


def _batch(b: int, scale: float, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Summed log-probs of completions: negative, tens to hundreds of nats; the policy close to the reference.
    base = -torch.rand(b, 2, generator=generator, dtype=torch.float64) * 60 * scale - 5
    noise = torch.randn(b, 2, generator=generator, dtype=torch.float64) * 3 * scale
    pc, pr = base[:, 0] + noise[:, 0], base[:, 1] + noise[:, 1]
    rc, rr = base[:, 0], base[:, 1]
    return [t.to(dtype) for t in (pc, pr, rc, rr)]


def _run(loss: Callable[..., torch.Tensor], inputs: list[torch.Tensor], beta: float, what: str) -> torch.Tensor:
    b = inputs[0].shape[0]
    try:
        out = loss(*inputs, beta=beta)
    except Exception as error:
        raise BatteryError(f"{what}: the function raised {type(error).__name__}: {error}") from error
    if not isinstance(out, torch.Tensor):
        raise BatteryError(f"{what}: must return a torch tensor of per-pair losses, got {type(out).__name__}")
    if out.shape != (b,):
        hint = " (do not reduce with .mean() or .sum(): return one loss per pair)" if out.dim() == 0 else ""
        raise BatteryError(f"{what}: must return shape ({b},), one loss per pair, got {tuple(out.shape)}{hint}")
    if not out.is_floating_point():
        raise BatteryError(f"{what}: must return a floating-point tensor, got {out.dtype}")
    return out


def check_preference_loss(loss: Callable[..., torch.Tensor], beta: float) -> dict[str, bool]:
    """Raise ``BatteryError`` on the first failed check; return informational flags otherwise."""
    for dtype in (torch.float32, torch.bfloat16):
        for scale, label in ((1.0, "typical"), (20.0, "extreme")):
            inputs = [t.requires_grad_(True) for t in _batch(8, scale, dtype, seed=1)]
            what = f"{label} inputs in {str(dtype).removeprefix('torch.')}"
            out = _run(loss, inputs, beta, what)
            if not torch.isfinite(out.float()).all():
                raise BatteryError(f"{what}: the loss is not finite ({out.float().tolist()[:4]}...)")
            try:
                grads = torch.autograd.grad(out.float().mean(), inputs[:2], allow_unused=True)
            except RuntimeError as error:
                raise BatteryError(f"{what}: the loss is not differentiable: {error}") from error
            if any(g is None for g in grads):
                raise BatteryError(
                    f"{what}: the loss does not depend on the policy log-probs; "
                    "it must be a function of policy_chosen_logps and policy_rejected_logps"
                )
            for g, name in zip(grads, ("policy_chosen_logps", "policy_rejected_logps"), strict=True):
                if not torch.isfinite(g.float()).all():
                    raise BatteryError(f"{what}: the gradient with respect to {name} is not finite")
            if label == "typical" and dtype == torch.float32 and all(float(g.abs().max()) == 0 for g in grads):
                raise BatteryError(
                    f"{what}: the gradient with respect to the policy log-probs is zero everywhere; "
                    "such a loss cannot train the model"
                )
    for b in (2, 5, 16):
        _run(loss, _batch(b, 1.0, torch.float32, seed=b), beta, f"batch of {b} pairs")
    inputs = _batch(8, 1.0, torch.float32, seed=3)
    first, second = _run(loss, inputs, beta, "determinism"), _run(loss, inputs, beta, "determinism")
    if not torch.equal(first, second):
        raise BatteryError("two calls on the same inputs gave different losses; the loss must be deterministic")
    # Informational: does a pair's loss depend on the other pairs in the batch (batch statistics)?
    alone = _run(loss, [t[:4] for t in inputs], beta, "a sub-batch")
    return {"batch_dependent": not torch.allclose(alone, first[:4], rtol=1e-5, atol=1e-6)}


def check_classification_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, bool]:
    """The same checks for ``loss(logits (B, C), targets (B,)) -> (B,)``."""
    generator = torch.Generator().manual_seed(0)
    for scale in (1.0, 50.0):
        logits = (torch.randn(8, 10, generator=generator) * scale).requires_grad_(True)
        targets = torch.randint(0, 10, (8,), generator=generator)
        try:
            out = loss(logits, targets)
        except Exception as error:
            raise BatteryError(f"logits of scale {scale}: raised {type(error).__name__}: {error}") from error
        if not isinstance(out, torch.Tensor) or out.shape != (8,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise BatteryError(f"must return one loss per example, shape (8,), got {shape}")
        if not torch.isfinite(out).all():
            raise BatteryError(f"logits of scale {scale}: the loss is not finite")
        try:
            (grad,) = torch.autograd.grad(out.mean(), logits, allow_unused=True)
        except RuntimeError as error:
            raise BatteryError(f"logits of scale {scale}: the loss is not differentiable: {error}") from error
        if grad is None or not torch.isfinite(grad).all() or float(grad.abs().max()) == 0:
            raise BatteryError(f"logits of scale {scale}: the gradient with respect to the logits is missing or zero")
    return {"batch_dependent": False}
