"""Numerically safe building blocks shared by the loss functions.

Every loss must stay finite, with finite gradients, for margins |beta*rho| up to 1e4 in float32 and bfloat16
inputs. The only primitives that break there are ``exp`` (overflow; DiscoPOP's exp(-u) is inf for u < -88.7 in
float32 and 0*inf = NaN once the gate underflows) and batch statistics of a batch of one (the unbiased
variance divides by n - 1 = 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Log-units kept below the dtype's largest value. exp is exact up to log(max) - 20 (68.7 in float32, 689.8 in
# float64) and continued linearly beyond, so that even a margin of 1e4 times a batch of 1e4 pairs sums to a
# finite number (e^20 ~ 4.9e8 > 1e4 * 1e4).
EXP_HEADROOM = 20.0


def promote(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast inputs to float32 or wider: losses never compute in bf16/fp16 (docs/loss-contract.md)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def safe_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) for x <= x_max; the C1 linear continuation exp(x_max) * (1 + x - x_max) above.

    Value and first derivative are continuous at x_max, and the derivative beyond is the constant exp(x_max).
    """
    x_max = math.log(torch.finfo(x.dtype).max) - EXP_HEADROOM
    clipped = x.clamp(max=x_max)
    return torch.exp(clipped) * (1.0 + (x - clipped))


def softplus_neg(x: torch.Tensor) -> torch.Tensor:
    """f_dpo(x) = -log sigma(x) = log(1 + e^-x), computed without overflow."""
    return -F.logsigmoid(x)


def hinge(x: torch.Tensor) -> torch.Tensor:
    """f_slic(x) = max(0, 1 - x)."""
    return torch.relu(1.0 - x)


def batch_var(x: torch.Tensor) -> torch.Tensor:
    """Unbiased batch variance, as ``Tensor.var()``; a batch of one has variance 0 instead of NaN."""
    return x.var(correction=1 if x.shape[0] > 1 else 0)


def batch_std(x: torch.Tensor) -> torch.Tensor:
    """Unbiased batch standard deviation, as ``Tensor.std()``; a batch of one has std 0 instead of NaN.

    ``Tensor.std`` masks its first derivative where the std is 0 (every margin equal, as at the first step),
    but its second derivative there is NaN, which breaks curvature analysis; the double ``where`` keeps sqrt
    away from 0 in the forward and every backward pass.
    """
    var = batch_var(x)
    positive = var > 0
    safe = torch.where(positive, var, torch.ones_like(var))
    return torch.where(positive, torch.sqrt(safe), torch.zeros_like(var))
