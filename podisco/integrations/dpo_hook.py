"""The loss hook for TRL 1.16's ``DPOTrainer``: its own loss code with the per-pair loss replaced.

TRL 1.16 computes the DPO loss inline in ``DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py), between the
policy forward and the metrics, from a list of built-in ``loss_type`` values; there is no narrower hook to
override. ``compute_dpo_loss`` therefore runs TRL's ``_compute_loss`` unchanged, so that every logged metric
(``rewards/*``, ``logps/*``, ``logits/*``, ``entropy``, ``num_tokens``) is TRL's own, keeps the per-token log-probs
of the one policy forward it makes, and returns the loss computed from them by the given function instead of
TRL's (whose few elementwise operations on the same sums are thrown away).

The two functions here use nothing but their arguments and tensor methods: ``podisco export --format trl``
copies their source verbatim into a file that imports only torch, and ``podisco.integrations.trl`` calls the
same code, so the exported trainer and ``PodiscoDPOTrainer`` cannot drift apart.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the copied source must not need these names at run time
    from collections.abc import Callable

    import torch


def unsupported_setting(
    loss_type: "list[str]",
    loss_weights: "list[float] | None",
    f_divergence_type: str,
    ld_alpha: "float | None",
    use_weighting: bool,
) -> "str | None":
    """Why these ``DPOConfig`` values cannot be combined with a replaced loss, or None when they can.

    Each of them changes what TRL's own loss computes (which loss, or the log-probs and weights it sees), which
    a function of the four summed log-probs cannot honour; refusing is better than silently ignoring them.
    """
    if list(loss_type) != ["sigmoid"] or (loss_weights is not None and list(loss_weights) != [1.0]):
        return (
            f"loss_type={list(loss_type)} / loss_weights={loss_weights} choose TRL's own loss; leave them at their "
            "defaults, the loss is the one given to this trainer"
        )
    if f_divergence_type != "reverse_kl":
        return (
            f"f_divergence_type={f_divergence_type!r} rewrites the log-ratios inside TRL's loss; the replaced loss "
            "takes the plain log-probs (use 'reverse_kl')"
        )
    if ld_alpha is not None:
        return "ld_alpha (LD-DPO) reweights the log-probs inside TRL's loss; it is not supported with a replaced loss"
    if use_weighting:
        return "use_weighting (WPO) weights TRL's own per-pair loss; it is not supported with a replaced loss"
    return None


def compute_dpo_loss(
    trainer: object,
    trl_compute_loss: "Callable",
    model: "Callable",
    inputs: dict,
    return_outputs: bool,
    loss_fn: "Callable[..., torch.Tensor]",
    loss_kwargs: dict,
) -> object:
    """``DPOTrainer._compute_loss(model, inputs, return_outputs)`` with the loss ``loss_fn(...).mean()``.

    Call it from a ``DPOTrainer`` subclass as ``compute_dpo_loss(self, super()._compute_loss, model, inputs,
    return_outputs, loss_fn, loss_kwargs)``. ``loss_fn(policy_chosen_logps, policy_rejected_logps,
    reference_chosen_logps, reference_rejected_logps, *, beta, chosen_lengths, rejected_lengths, **loss_kwargs)``
    returns per-pair losses (B,); log-probs are summed over completion tokens, lengths count completion tokens
    (as TRL's ``ipo`` does), beta is ``DPOConfig.beta``. A Mixture-of-Experts router loss is added as TRL adds it.
    """
    problem = unsupported_setting(
        trainer.loss_types, trainer.loss_weights, trainer.f_divergence_type, trainer.ld_alpha, trainer.use_weighting
    )
    if problem:
        raise ValueError(problem)
    policy_outputs = []

    def policy(**kwargs):
        # TRL calls the model once for the loss (and, for the deprecated return_outputs, once more without
        # labels); the first call's log-probs are the ones that carry the gradient.
        outputs = model(**kwargs)
        policy_outputs.append(outputs)
        return outputs

    precomputed = trainer.precompute_ref_logps
    if not precomputed:
        # Without precomputed columns TRL would run the reference inline, where its sums cannot be reached. Its own
        # compute_ref_log_probs (the function behind precompute_ref_log_probs=True) gives them, and flagging the
        # batch as precomputed makes _compute_loss read them instead: still one reference forward per batch.
        ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.ref_model or trainer.model, inputs)
        inputs = {**inputs, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
        trainer.precompute_ref_logps = True
    try:
        result = trl_compute_loss(policy, inputs, return_outputs)
    finally:
        trainer.precompute_ref_logps = precomputed

    outputs = policy_outputs[0]
    completion_mask = inputs["completion_mask"]
    seq_len = completion_mask.size(1) - 1
    # TRL's own sums: the fused LM head returns 0 where the label is -100 (prompt, padding), so summing over the
    # sequence sums the completion tokens (the same expression TRL evaluates, hence the same numbers).
    logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
    chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # TRL's batch is [chosen, rejected]
    lengths = completion_mask.sum(dim=1).clamp(min=1).float()  # what TRL's ipo and sigmoid_norm divide by
    chosen_lengths, rejected_lengths = lengths.chunk(2, dim=0)
    losses = loss_fn(
        chosen_logps,
        rejected_logps,
        inputs["ref_chosen_logps"],
        inputs["ref_rejected_logps"],
        beta=trainer.beta,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        **loss_kwargs,
    )
    loss = losses.mean()
    if trainer.aux_loss_enabled:
        loss = loss + trainer.router_aux_loss_coef * outputs.aux_loss
    return (loss, result[1]) if return_outputs else loss
