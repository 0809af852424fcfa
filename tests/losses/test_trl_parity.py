"""Float64 parity with TRL 1.16: we run TRL's own ``DPOTrainer._compute_loss`` (unbound) on a fake trainer and
a fake model whose per-token log-probs we choose, and compare its scalar loss with the batch mean of ours.

TRL sums per-token log-probs over ``completion_mask[:, 1:]``; its ipo / sigmoid_norm divide by
``completion_mask.sum(1)`` (unshifted). Every sequence starts with a prompt token, so the two counts agree and
our ``chosen_lengths`` / ``rejected_lengths`` are exactly TRL's. TRL's ``sigmoid`` ignores label smoothing, so
it is compared at label_smoothing = 0; ``aot`` uses it, ``exo_pair`` needs it > 0, ``robust`` uses it.
TRL builds exo_pair's eps as a float32 tensor (``torch.tensor(label_smoothing)``), so log(eps) carries float32
rounding there; we keep eps in the input's precision, and compare exo_pair to 1e-7 instead of 1e-10.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.dpo_trainer import DPOTrainer

from podisco.losses import TRL_LOSS_TYPES, combine, get_loss

pytestmark = pytest.mark.integration

B, T = 6, 12


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _inputs(seed: int):
    """Per-token log-probs (2B, T-1) for policy and reference, and a completion mask with varied lengths."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, 4, (B,), generator=g)  # >= 1 prompt token per sequence
    completion = torch.randint(1, T - 4, (2 * B,), generator=g)
    mask = torch.zeros(2 * B, T, dtype=torch.long)
    for row in range(2 * B):
        p = int(prompt[row % B])
        mask[row, p : p + int(completion[row])] = 1
    policy_tokens = -torch.rand(2 * B, T - 1, generator=g, dtype=torch.float64) * 4
    ref_tokens = policy_tokens + torch.randn(2 * B, T - 1, generator=g, dtype=torch.float64) * 0.6
    return mask, policy_tokens, ref_tokens


def _trl_loss(loss_types, weights, beta, label_smoothing, tau, seed, metrics=None):
    mask, policy_tokens, ref_tokens = _inputs(seed)
    shifted = mask[:, 1:].to(torch.float64)
    ref_logps = (ref_tokens * shifted).sum(1)
    outputs = SimpleNamespace(
        log_probs=policy_tokens * shifted,  # TRL sums these over the sequence
        entropy=torch.zeros_like(policy_tokens),
        mean_logits=torch.zeros_like(policy_tokens),
        is_top1=torch.zeros_like(policy_tokens, dtype=torch.bool),
    )
    model = lambda **kwargs: outputs  # noqa: E731
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=list(loss_types),
        loss_weights=list(weights),
        beta=beta,
        label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=tau),
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * B, T, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref_logps[:B],
        "ref_rejected_logps": ref_logps[B:],
    }
    loss = DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)
    if metrics is not None:
        metrics.update({k: v[0] for k, v in fake._metrics["train"].items() if v})
    return loss


def _ours(fn, beta, label_smoothing, tau, seed):
    mask, policy_tokens, ref_tokens = _inputs(seed)
    shifted = mask[:, 1:].to(torch.float64)
    policy, ref = (policy_tokens * shifted).sum(1), (ref_tokens * shifted).sum(1)
    lengths = mask.sum(1).to(torch.float64)
    per_pair = fn(
        policy[:B],
        policy[B:],
        ref[:B],
        ref[B:],
        beta=beta,
        chosen_lengths=lengths[:B],
        rejected_lengths=lengths[B:],
        label_smoothing=label_smoothing,
        tau=tau,
    )
    assert per_pair.shape == (B,)
    return per_pair.mean()


SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1}


@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_each_trl_loss_type_matches_trl(loss_type, beta):
    eps = SMOOTHING.get(loss_type, 0.0)
    for seed in (0, 1):
        want = _trl_loss([loss_type], [1.0], beta, eps, 0.05, seed)
        got = _ours(get_loss(loss_type), beta, eps, 0.05, seed)
        rtol = 1e-7 if loss_type == "exo_pair" else 1e-10
        torch.testing.assert_close(got, want, rtol=rtol, atol=1e-12)


def test_discopop_tau_is_trls_discopop_tau():
    want = _trl_loss(["discopop"], [1.0], 0.1, 0.0, 0.2, seed=3)
    torch.testing.assert_close(_ours(get_loss("discopop"), 0.1, 0.0, 0.2, seed=3), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "weights",
    [{"sigmoid": 0.8, "bco_pair": 0.2, "sft": 1.0}, {"discopop": 1.0, "sft": 0.5}, {"ipo": 0.3, "hinge": 2.0}],
)
def test_weighted_combinations_match_trl_loss_weights(weights):
    want = _trl_loss(list(weights), list(weights.values()), 0.1, 0.0, 0.05, seed=2)
    torch.testing.assert_close(_ours(combine(weights), 0.1, 0.0, 0.05, seed=2), want, rtol=1e-10, atol=1e-12)


def test_reward_metrics_match_trl():
    """The trainer logs TRL's rewards/* from the same log-ratios: beta * (policy - reference)."""
    metrics: dict[str, float] = {}
    _trl_loss(["sigmoid"], [1.0], 0.1, 0.0, 0.05, seed=4, metrics=metrics)
    mask, policy_tokens, ref_tokens = _inputs(4)
    shifted = mask[:, 1:].to(torch.float64)
    policy, ref = (policy_tokens * shifted).sum(1), (ref_tokens * shifted).sum(1)
    chosen, rejected = 0.1 * (policy[:B] - ref[:B]), 0.1 * (policy[B:] - ref[B:])
    assert metrics["rewards/chosen"] == pytest.approx(chosen.mean().item(), abs=1e-12)
    assert metrics["rewards/margins"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-12)
    assert metrics["rewards/accuracies"] == pytest.approx((chosen > rejected).double().mean().item())
