"""The preference loop: it learns, accumulates exactly, caches the reference, resumes exactly, stops on NaN."""

from __future__ import annotations

import json

import pytest
import torch

from podisco.data import tokenize_pairs, validate_rows
from podisco.training.config import TrainConfig
from podisco.training.loop import NonFiniteError
from podisco.training.preference import train_preference
from podisco.training.reference import cached_reference_logps
from tests.training.tiny import make_rows


@pytest.fixture
def examples(tokenizer):
    rows, _ = validate_rows(make_rows(16, seed=1))
    return tokenize_pairs(rows, tokenizer, max_length=48)[0]


def _config(tmp_path, name="run", **kw) -> TrainConfig:
    config = TrainConfig(output_dir=str(tmp_path / name), reference_cache_dir=str(tmp_path / "cache"))
    config.loss.beta = 0.1
    config.optim.lr = 1e-3
    config.optim.warmup_ratio = 0.0
    config.optim.schedule = "constant"
    for key, value in kw.items():
        setattr(config, key, value)
    return config


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


# On CPU these comparisons are exact to rounding; CUDA kernels reduce in other orders (checked on an H200).
EXACT = {} if not torch.cuda.is_available() else {"rtol": 1e-3, "atol": 2e-3}
ZERO = 0.0 if not torch.cuda.is_available() else pytest.approx(0.0, abs=1e-4)


def test_a_step_changes_the_parameters_and_logs_trl_metrics(tmp_path, tokenizer, tiny_model_factory, examples):
    model = tiny_model_factory()
    before = _params(model)
    result = train_preference(_config(tmp_path, max_steps=2), model, examples, 0, tokenizer)
    assert result.steps == 2
    assert not torch.allclose(before, _params(model))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
        "tokens/s",
    ):
        assert key in lines[0], key
    assert lines[0]["rewards/margins"] == ZERO  # policy == reference before the first update
    assert lines[0]["loss"] == pytest.approx(0.6931471805599453, abs=1e-6 if not EXACT else 1e-4)  # -log sigma(0)
    assert (tmp_path / "run" / "final" / "config.json").exists()
    assert (tmp_path / "run" / "config.yaml").exists()


def test_gradient_accumulation_matches_one_big_batch(tmp_path, tokenizer, tiny_model_factory, examples):
    big, small = tiny_model_factory(), tiny_model_factory()
    train_preference(_config(tmp_path, "big", batch_size=8, grad_accum=1, max_steps=2), big, examples, 0)
    train_preference(_config(tmp_path, "small", batch_size=4, grad_accum=2, max_steps=2), small, examples, 0)
    torch.testing.assert_close(_params(big), _params(small), **(EXACT or {"rtol": 1e-5, "atol": 1e-6}))


def test_reference_cache_hits_and_misses(tmp_path, tokenizer, tiny_model_factory, examples):
    model = tiny_model_factory()
    args = (model, tokenizer, examples, 0, "shared", 48, tmp_path / "cache")
    first, hit = cached_reference_logps(*args)
    assert not hit
    second, hit = cached_reference_logps(*args)
    assert hit and torch.equal(first, second)
    _, hit = cached_reference_logps(model, tokenizer, examples[:-1], 0, "shared", 48, tmp_path / "cache")
    assert not hit  # different data
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    _, hit = cached_reference_logps(*args)
    assert not hit  # different weights


def test_resume_reaches_the_same_parameters(tmp_path, tokenizer, tiny_model_factory, examples):
    unbroken = tiny_model_factory()
    train_preference(_config(tmp_path, "a", max_steps=4, epochs=1), unbroken, examples, 0)
    first_half = tiny_model_factory()
    train_preference(_config(tmp_path, "b", max_steps=2), first_half, examples, 0)
    resumed = tiny_model_factory()  # the same start (it is also the reference); the checkpoint restores the rest
    train_preference(
        _config(tmp_path, "b", max_steps=4), resumed, examples, 0, resume_from=tmp_path / "b" / "checkpoint-2"
    )
    torch.testing.assert_close(_params(resumed), _params(unbroken), **(EXACT or {"rtol": 1e-6, "atol": 1e-7}))


def test_non_finite_loss_stops_and_names_the_step(tmp_path, tokenizer, tiny_model_factory, examples):
    calls = {"n": 0}

    def goes_nan_at_third_call(pc, pr, rc, rr, *, beta, **_):
        calls["n"] += 1
        margin = beta * ((pc - pr) - (rc - rr))
        return -torch.nn.functional.logsigmoid(margin) * (float("nan") if calls["n"] >= 3 else 1.0)

    with pytest.raises(NonFiniteError, match="at step 3"):
        train_preference(_config(tmp_path, max_steps=5), tiny_model_factory(), examples, 0, loss=goes_nan_at_third_call)


def test_too_few_pairs_for_one_batch_is_a_clear_error(tmp_path, tokenizer, tiny_model_factory, examples):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train_preference(_config(tmp_path, batch_size=64), tiny_model_factory(), examples, 0)


def test_gradient_checkpointing_gives_the_same_training(tmp_path, tokenizer, tiny_model_factory, examples):
    plain, checkpointed = tiny_model_factory(), tiny_model_factory()
    train_preference(_config(tmp_path, "plain", max_steps=2), plain, examples, 0)
    train_preference(_config(tmp_path, "ckpt", max_steps=2, gradient_checkpointing=True), checkpointed, examples, 0)
    torch.testing.assert_close(_params(plain), _params(checkpointed), **(EXACT or {"rtol": 1e-5, "atol": 1e-6}))


@pytest.mark.slow
def test_a_compiled_forward_trains_like_the_eager_one_and_saves_the_same_names(
    tmp_path, tokenizer, tiny_model_factory, examples
):
    eager, compiled = tiny_model_factory(), tiny_model_factory()
    first = train_preference(_config(tmp_path, "eager", max_steps=3), eager, examples, 0)
    second = train_preference(_config(tmp_path, "compiled", max_steps=3, compile=True), compiled, examples, 0)
    assert [h["loss"] for h in second.history] == pytest.approx([h["loss"] for h in first.history], abs=1e-5)
    torch.testing.assert_close(_params(eager), _params(compiled), rtol=1e-4, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." prefixes in final/


def test_lora_policy_uses_the_base_model_as_reference(tmp_path, tokenizer, tiny_model_factory, examples):
    from podisco.models.lora import apply_lora

    model = apply_lora(tiny_model_factory(), r=4, alpha=8.0, dropout=0.0)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    first = train_preference(_config(tmp_path, "l1", max_steps=3, cache_reference=False), model, examples, 0)
    assert first.history[0]["rewards/margins"] == ZERO  # a fresh adapter is the identity
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param.cpu(), base_before[name].cpu()), name  # only the adapter trains
    # Train on: the reference must be the base model (adapter disabled), not the adapted policy, so the
    # margins at the first step of the second run are no longer 0.
    second = train_preference(_config(tmp_path, "l2", max_steps=1, cache_reference=False), model, examples, 0)
    assert second.history[0]["rewards/margins"] != 0.0
    assert (tmp_path / "l2" / "final" / "adapter_config.json").exists()


def test_non_finite_gradient_stops_and_names_the_step(tmp_path, tokenizer, tiny_model_factory, examples):
    def finite_loss_nan_gradient(pc, pr, rc, rr, *, beta, **_):
        u = beta * ((pc - pr) - (rc - rr))
        return torch.sqrt(u - u.detach())  # value 0, d/du = 1 / (2 * 0) = inf -> NaN through the model

    with pytest.raises(NonFiniteError, match=r"non-finite gradient norm .* at step 1"):
        train_preference(
            _config(tmp_path, max_steps=2), tiny_model_factory(), examples, 0, loss=finite_loss_nan_gradient
        )


def test_one_process_can_train_again_with_another_precision():
    from podisco.training.config import TrainConfig
    from podisco.training.loop import make_accelerator

    assert make_accelerator(TrainConfig(precision="fp32")).mixed_precision == "no"
    assert make_accelerator(TrainConfig(precision="bf16")).mixed_precision == "bf16"  # raised before
    assert make_accelerator(TrainConfig(precision="fp32")).mixed_precision == "no"
