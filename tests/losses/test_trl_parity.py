"""Float64 parity with TRL 1.16: run TRL's own ``DPOTrainer._compute_loss`` (the unbound function) on a fake
trainer and a fake model whose per-token log-probs we choose, and compare its scalar loss with the batch mean of
our per-pair losses. Nothing of TRL's loss code is re-derived here.

How the fake batch maps onto our contract:

* The batch holds 2B sequences, the B chosen completions first, then the B rejected ones (TRL's layout).
* The fake model does what a fused LM head does with the ``labels`` TRL passes it: the log-prob at position t
  belongs to token t + 1, and it is 0 where that label is -100 (a prompt or padding token). TRL then sums the
  (2B, T - 1) log-probs over the sequence, i.e. over the *shifted* completion mask ``completion_mask[:, 1:]``;
  our summed log-probs are the same sums.
* ``ipo`` and ``sigmoid_norm`` divide by ``completion_mask.sum(1)`` (unshifted), ``sft`` averages over the
  shifted mask. Every sequence starts with at least one prompt token, so the shifted and unshifted counts agree
  (asserted below) and one ``chosen_lengths`` / ``rejected_lengths`` pair is exactly what TRL uses everywhere.
* Reference log-probs are precomputed (``precompute_ref_logps=True``) and passed as ``ref_chosen_logps`` /
  ``ref_rejected_logps``.
* TRL's ``sigmoid`` ignores ``label_smoothing`` (ours is cDPO for eps > 0), so it is compared at eps = 0;
  ``exo_pair`` needs eps > 0, ``robust``, ``aot`` and ``aot_unpaired`` are compared with and without it.
* TRL builds exo_pair's eps with ``torch.tensor(label_smoothing)``, which takes torch's default dtype; the TRL
  call therefore runs with a float64 default dtype, so that every number on TRL's side is float64 too.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.dpo_trainer import DPOTrainer

from podisco.losses import TRL_LOSS_TYPES, combine, get_loss

pytestmark = pytest.mark.integration

B, T = 8, 40  # pairs, padded sequence length (prompt + completion + padding)
TAU = 0.05  # TRL's default discopop_tau
RTOL, ATOL = 1e-10, 1e-12


@contextlib.contextmanager
def _float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    """A seeded batch of 2B sequences with varied prompt and completion lengths (chosen != rejected)."""
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(1, 8, (B,), generator=g)  # >= 1 prompt token: shifted and unshifted counts agree
    completion_len = torch.randint(4, 28, (2 * B,), generator=g)
    mask = torch.zeros(2 * B, T, dtype=torch.long)
    attention = torch.zeros(2 * B, T, dtype=torch.long)
    for row in range(2 * B):
        p, c = int(prompt_len[row % B]), int(completion_len[row])
        mask[row, p : p + c] = 1
        attention[row, : p + c] = 1
    # Per-token policy log-probs in (-2.2, -0.3): summed over 4..27 tokens they land around -50..-5.
    policy_tokens = -(0.3 + 1.9 * torch.rand(2 * B, T - 1, generator=g, dtype=torch.float64))
    # The reference differs per token and by a per-sequence drift, so log-ratios (and margins) of either sign and
    # of a few nats up to a few tens of nats occur: beta * rho covers both sides of hinge's kink and of 0.
    drift = 0.6 * torch.randn(2 * B, 1, generator=g, dtype=torch.float64)
    ref_tokens = policy_tokens + drift + 0.3 * torch.randn(2 * B, T - 1, generator=g, dtype=torch.float64)
    input_ids = torch.randint(1, 1000, (2 * B, T), generator=g)
    shifted = mask[:, 1:].to(torch.float64)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "completion_mask": mask,
        "policy_tokens": policy_tokens,
        "policy_logps": (policy_tokens * shifted).sum(1),
        "ref_logps": (ref_tokens * shifted).sum(1),
        "lengths": shifted.sum(1),
    }


class _FakeAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


class _FakeModel:
    """Returns per-token log-probs for the positions whose next-token label TRL did not mask with -100."""

    training = True

    def __init__(self, policy_tokens: torch.Tensor):
        self.policy_tokens = policy_tokens
        self.calls: list[dict] = []

    def __call__(self, *, labels, **kwargs):
        self.calls.append(kwargs)
        scored = (labels[:, 1:] != -100).to(self.policy_tokens.dtype)
        zeros = torch.zeros_like(self.policy_tokens)
        return SimpleNamespace(
            log_probs=self.policy_tokens * scored,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=torch.zeros_like(zeros, dtype=torch.bool),
        )


def _fake_trainer(model, loss_types, loss_weights, beta, label_smoothing, tau):
    return SimpleNamespace(
        model=model,
        accelerator=_FakeAccelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=list(loss_types),
        loss_weights=list(loss_weights),
        beta=beta,
        label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=tau),
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )


def _trl(batch, loss_types, loss_weights, *, beta, label_smoothing=0.0, tau=TAU):
    """TRL's scalar loss on ``batch``, and the fake trainer (for its ``_metrics``)."""
    model = _FakeModel(batch["policy_tokens"])
    trainer = _fake_trainer(model, loss_types, loss_weights, beta, label_smoothing, tau)
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "completion_mask": batch["completion_mask"],
        "ref_chosen_logps": batch["ref_logps"][:B],
        "ref_rejected_logps": batch["ref_logps"][B:],
    }
    with _float64_default():
        loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    assert len(model.calls) == 1  # one policy forward; the reference came precomputed
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.dtype == torch.float64
    return loss, trainer


def _ours(batch, fn, *, beta, label_smoothing=0.0, tau=TAU):
    policy, ref, lengths = batch["policy_logps"], batch["ref_logps"], batch["lengths"]
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
    assert per_pair.shape == (B,) and per_pair.dtype == torch.float64
    return per_pair.mean()


# label_smoothing values to compare each loss type at; TRL's sigmoid ignores it, exo_pair needs it > 0.
SMOOTHING = {"exo_pair": (1e-3, 0.1), "robust": (0.0, 0.1), "aot": (0.0, 0.1), "aot_unpaired": (0.0, 0.1)}
CASES = [(name, eps) for name in TRL_LOSS_TYPES for eps in SMOOTHING.get(name, (0.0,))]


def test_fake_batch_is_what_trl_sees():
    """The premises of the comparison: lengths agree shifted/unshifted, sums are realistic, margins are mixed."""
    for seed in (0, 1):
        batch = _batch(seed)
        mask = batch["completion_mask"]
        assert torch.equal(mask[:, 0], torch.zeros(2 * B, dtype=torch.long))
        torch.testing.assert_close(batch["lengths"], mask.sum(1).to(torch.float64), rtol=0, atol=0)
        assert not torch.equal(batch["lengths"][:B], batch["lengths"][B:])
        policy, ref = batch["policy_logps"], batch["ref_logps"]
        assert policy.max() < -1 and policy.min() > -60
        rho = (policy[:B] - policy[B:]) - (ref[:B] - ref[B:])
        assert (rho > 0).any() and (rho < 0).any()
        assert ((0.1 * rho) > 1).any()  # hinge is zero for some pairs at beta = 0.1, positive for others
        # aot sorts margins: the sorted order is not the batch order, so pairing actually changes
        assert not torch.equal(torch.sort(policy[:B] - policy[B:]).indices, torch.sort(ref[:B] - ref[B:]).indices)


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
@pytest.mark.parametrize(("loss_type", "label_smoothing"), CASES)
def test_each_trl_loss_type_matches_trl(loss_type, label_smoothing, beta):
    for seed in (0, 1):
        batch = _batch(seed)
        want, _ = _trl(batch, [loss_type], [1.0], beta=beta, label_smoothing=label_smoothing)
        got = _ours(batch, get_loss(loss_type), beta=beta, label_smoothing=label_smoothing)
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tau", [0.01, 0.2, 1.0])
def test_discopop_tau_is_trls_discopop_tau(tau):
    batch = _batch(3)
    want, _ = _trl(batch, ["discopop"], [1.0], beta=0.1, tau=tau)
    torch.testing.assert_close(_ours(batch, get_loss("discopop"), beta=0.1, tau=tau), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize(
    ("weights", "label_smoothing"),
    [
        ({"sigmoid": 0.8, "bco_pair": 0.2, "sft": 1.0}, 0.0),  # MPO, as in TRL's docs
        ({"discopop": 1.0, "sft": 0.5}, 0.0),
        ({"ipo": 0.3, "hinge": 2.0, "sigmoid_norm": 0.7}, 0.0),
        ({"robust": 0.5, "aot": 1.5, "exo_pair": 0.25}, 0.1),  # one label_smoothing shared by every component
    ],
)
def test_weighted_combinations_match_trl_loss_weights(weights, label_smoothing, beta):
    batch = _batch(2)
    want, _ = _trl(batch, list(weights), list(weights.values()), beta=beta, label_smoothing=label_smoothing)
    got = _ours(batch, combine(weights), beta=beta, label_smoothing=label_smoothing)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_reward_metrics_match_trl():
    """TRL's logged rewards/* and logps/* are beta * (policy - reference) statistics of the same sums."""
    beta, batch = 0.1, _batch(4)
    _, trainer = _trl(batch, ["sigmoid"], [1.0], beta=beta)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    policy, ref = batch["policy_logps"], batch["ref_logps"]
    chosen, rejected = beta * (policy[:B] - ref[:B]), beta * (policy[B:] - ref[B:])
    assert 0 < (chosen > rejected).sum() < B  # the accuracy is not trivially 0 or 1
    expected = {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).double().mean().item(),
        "logps/chosen": policy[:B].mean().item(),
        "logps/rejected": policy[B:].mean().item(),
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
