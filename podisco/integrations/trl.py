"""TRL 1.16's ``DPOTrainer`` with any podisco loss.

    from trl import DPOConfig
    from podisco.integrations.trl import PodiscoDPOTrainer

    trainer = PodiscoDPOTrainer(model=model, args=DPOConfig(beta=0.05, ...), train_dataset=pairs,
                                processing_class=tokenizer, loss="discopop")
    trainer.train()

``loss`` is a registered name ("discopop", "aqfl"), a ``{name: weight}`` combination, a ``loss.py:NAME`` file
(what ``podisco export`` writes) or a function under podisco's loss contract. Everything else is TRL's: data
processing, reference handling (precomputed or not, PEFT), the loop and every logged metric; only the loss that
``DPOTrainer._compute_loss`` returns is replaced (``podisco.integrations.dpo_hook`` says how).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podisco.errors import PodiscoError
from podisco.integrations.dpo_hook import compute_dpo_loss, unsupported_setting
from podisco.losses import LossFn, check_params, combine, get_spec, resolve
from podisco.losses.forms import is_loss_file, load_loss_file
from podisco.losses.registry import LossParameterError

try:
    from trl import DPOTrainer
except ImportError as error:  # an optional extra: say how to get it rather than show a bare ModuleNotFoundError
    raise PodiscoError(
        f"podisco.integrations.trl needs TRL ({error}); install it with: pip install 'podisco[trl]'"
    ) from error

LossArg = str | Mapping[str, float] | LossFn

# TRL's default label_smoothing (0.0) is also "not set": a loss keeps its own default then (exo_pair needs > 0).
_TRL_DEFAULT_LABEL_SMOOTHING = 0.0


def resolve_trl_loss(
    loss: LossArg,
    loss_params: Mapping[str, float] | None = None,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> tuple[LossFn, dict[str, float]]:
    """The loss function and the keyword hyperparameters it is called with on every batch.

    A registered loss (or combination) takes its registered defaults, then ``DPOConfig``'s ``label_smoothing``
    (when non-zero) and ``discopop_tau`` for the losses that take ``label_smoothing`` / ``tau`` (TRL's meaning of
    both), then ``loss_params``; a parameter no component takes is refused. A file or a function gets only
    ``loss_params`` (its own defaults apply otherwise).
    """
    params = dict(loss_params or {})
    if isinstance(loss, str) and is_loss_file(loss):
        _, fn = load_loss_file(loss)
        return resolve(fn), params
    if isinstance(loss, str):
        check_params(loss, params)
        specs = [get_spec(loss)]
        fn = specs[0].fn
    elif isinstance(loss, Mapping):
        specs = [get_spec(name) for name in loss]
        fn = combine(loss)
        taken = {key for spec in specs for key in spec.params}
        unknown = sorted(set(params) - taken)
        if unknown:  # as podisco train: a hyperparameter must be taken by at least one component
            raise LossParameterError(f"no component of {', '.join(loss)} takes the parameter {unknown[0]!r}")
    elif callable(loss):
        return resolve(loss), params
    else:
        raise PodiscoError(
            f"loss must be a name, a {{name: weight}} mapping, a loss.py:NAME file or a function, "
            f"not {type(loss).__name__}"
        )
    defaults: dict[str, float] = {}
    for spec in specs:
        defaults.update(spec.params)
    if "label_smoothing" in defaults and label_smoothing != _TRL_DEFAULT_LABEL_SMOOTHING:
        defaults["label_smoothing"] = label_smoothing
    if "tau" in defaults:
        defaults["tau"] = discopop_tau
    return fn, {**defaults, **params}


class PodiscoDPOTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` whose loss is a podisco loss at ``args.beta``.

    Takes ``DPOTrainer``'s arguments plus ``loss`` (see ``resolve_trl_loss``) and ``loss_params`` (podisco's
    hyperparameters: ``label_smoothing``, ``tau``, ``gamma``). Leave ``loss_type``, ``loss_weights``,
    ``f_divergence_type``, ``ld_alpha`` and ``use_weighting`` at their defaults: they configure TRL's own loss,
    and a setting that would be ignored is refused instead.
    """

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: Any = None,
        *more: Any,
        loss: LossArg,
        loss_params: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked before DPOTrainer.__init__, which may spend minutes precomputing reference log-probs.
        if args is not None:
            problem = unsupported_setting(
                args.loss_type, args.loss_weights, args.f_divergence_type, args.ld_alpha, args.use_weighting
            )
            if problem:
                raise PodiscoError(f"PodiscoDPOTrainer: {problem}")
        self.podisco_loss, self.podisco_loss_params = resolve_trl_loss(
            loss,
            loss_params,
            label_smoothing=getattr(args, "label_smoothing", 0.0),
            discopop_tau=getattr(args, "discopop_tau", 0.05),
        )
        super().__init__(model, ref_model, args, *more, **kwargs)

    def _compute_loss(self, model: Any, inputs: dict, return_outputs: bool) -> Any:
        """TRL's ``_compute_loss`` (metrics and all), returning the podisco loss instead of TRL's."""
        return compute_dpo_loss(
            self, super()._compute_loss, model, inputs, return_outputs, self.podisco_loss, self.podisco_loss_params
        )
