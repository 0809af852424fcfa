"""precision="auto" on a CPU: a cached, keyed, skippable probe that leaves the model and the RNG alone.

No assertion here depends on which precision is faster on this machine: timings are faked where a decision
matters, and the real probe is only checked for what it leaves behind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from podisco.data import tokenize_pairs, validate_rows
from podisco.training import precision
from podisco.training.config import ConfigError, TrainConfig
from podisco.training.loop import mixed_precision
from podisco.training.preference import train_preference
from tests.training.tiny import make_rows


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A fresh cache folder and no decisions remembered from other tests; no forced choice."""
    monkeypatch.setenv("PODISCO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(precision, "_DECIDED", {})
    monkeypatch.setattr(precision, "_LOGGED", set())


@pytest.fixture
def examples(tokenizer):
    rows, _ = validate_rows(make_rows(16, seed=1))
    return tokenize_pairs(rows, tokenizer, max_length=48)[0]


def _lm_probe(model, seq: int = 12):
    """loss_of and make_batch for a plain LM loss over random tokens."""
    vocab = model.config.vocab_size
    data = torch.randint(0, vocab, (8, seq), generator=torch.Generator().manual_seed(0))
    return (lambda ids: model(ids, labels=ids).loss), (lambda n: data[:n])


def _fake_measure(fp32_s: float, bf16_s: float, calls: list):
    def measure(loss_of, make_batch, batch_size, params):
        calls.append(batch_size)
        return precision.Measurement(fp32_s, bf16_s, items=batch_size, rounds=1, cost_s=0.01)

    return measure


def _refuse(*args, **kwargs):
    raise AssertionError("the probe ran")


def test_the_cache_key_changes_with_the_model_shape_and_the_batch_shape(tiny_model_factory):
    from podisco.models import build_tiny_gpt2

    model = tiny_model_factory(seed=0)
    batch = torch.zeros(4, 12, dtype=torch.long)
    key = precision.probe_key(model, batch, "step")
    assert precision.probe_key(tiny_model_factory(seed=1), batch, "step") == key  # other weights, same shape
    assert precision.probe_key(model, torch.zeros(4, 11, dtype=torch.long), "step") == key  # same bucket
    wider = build_tiny_gpt2(model.config.vocab_size, n_layer=2, n_embd=64, n_head=2, n_positions=64)
    deeper = build_tiny_gpt2(model.config.vocab_size, n_layer=3, n_embd=32, n_head=2, n_positions=64)
    other_vocab = build_tiny_gpt2(model.config.vocab_size + 7, n_layer=2, n_embd=32, n_head=2, n_positions=64)
    for other in (wider, deeper, other_vocab):
        assert precision.probe_key(other, batch, "step") != key
    assert precision.probe_key(model, torch.zeros(4, 40, dtype=torch.long), "step") != key
    assert precision.probe_key(model, torch.zeros(8, 12, dtype=torch.long), "step") != key
    assert precision.probe_key(model, batch, "sft") != key
    assert key["model"]["shape"] == {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": model.config.vocab_size}
    assert key["torch"] == torch.__version__ and key["threads"] == torch.get_num_threads() and key["cpu"]


def test_a_cached_decision_is_reused_without_timing_again(tiny_model_factory, monkeypatch, tmp_path):
    model = tiny_model_factory()
    loss_of, make_batch = _lm_probe(model)
    calls: list = []
    monkeypatch.setattr(precision, "measure", _fake_measure(fp32_s=2.0, bf16_s=1.0, calls=calls))
    first = precision.choose_cpu_precision(model, loss_of, make_batch, 4, "step")
    assert (first.precision, first.source, first.speedup, calls) == ("bf16", "measured", 2.0, [4])
    assert len(list((tmp_path / "cache" / "precision").glob("*.json"))) == 1

    monkeypatch.setattr(precision, "_DECIDED", {})  # a new process: only the file remains
    monkeypatch.setattr(precision, "measure", _refuse)
    again = precision.choose_cpu_precision(model, loss_of, make_batch, 4, "step")
    assert (again.precision, again.source, again.fp32_s, again.bf16_s) == ("bf16", "cached", 2.0, 1.0)
    assert "measured earlier" in again.describe()

    monkeypatch.setattr(precision, "measure", _fake_measure(fp32_s=1.0, bf16_s=1.0, calls=calls))
    other = precision.choose_cpu_precision(model, loss_of, make_batch, 8, "step")  # another batch shape: a probe
    assert (other.precision, calls) == ("fp32", [4, 8])  # a tie is not worth bf16's rounding


def test_the_decision_needs_a_clear_speedup_and_is_described_with_its_times(tiny_model_factory, monkeypatch):
    model = tiny_model_factory()
    loss_of, make_batch = _lm_probe(model)
    for fp32_s, bf16_s, expected in ((1.0, 5.0, "fp32"), (1.05, 1.0, "fp32"), (1.9, 1.0, "bf16")):
        monkeypatch.setattr(precision, "_DECIDED", {})
        monkeypatch.setattr(precision, "measure", _fake_measure(fp32_s, bf16_s, []))
        decision = precision.choose_cpu_precision(model, loss_of, make_batch, 4, f"step {fp32_s}")
        assert decision.precision == expected
    assert precision.Decision("fp32", "measured", "k", 1.0, 5.0, 2.5, 4).describe() == (
        "precision auto: fp32 (bf16 0.20x fp32's speed on this CPU for this model; fwd+bwd 1000 ms fp32, "
        "5000 ms bf16; probe 2.5 s)"
    )
    assert decision.describe().startswith("precision auto: bf16 1.90x faster than fp32 on this CPU for this model")


def test_a_forced_choice_skips_the_probe(tiny_model_factory, monkeypatch, tokenizer, examples, tmp_path):
    monkeypatch.setattr(precision, "measure", _refuse)
    model = tiny_model_factory()
    loss_of, make_batch = _lm_probe(model)
    for value in ("bf16", "fp32"):
        monkeypatch.setenv(precision.ENV, value)
        decision = precision.choose_cpu_precision(model, loss_of, make_batch, 4, "step")
        assert (decision.precision, decision.source) == (value, "forced")
    monkeypatch.setenv(precision.ENV, "fp16")
    with pytest.raises(ConfigError, match=precision.ENV):
        precision.choose_cpu_precision(model, loss_of, make_batch, 4, "step")

    monkeypatch.setenv(precision.ENV, "bf16")
    config = TrainConfig(output_dir=str(tmp_path / "env"), max_steps=1, reference_cache_dir=str(tmp_path / "ref"))
    assert train_preference(config, model, examples, 0, tokenizer).precision == "bf16"
    monkeypatch.delenv(precision.ENV)
    config = TrainConfig(output_dir=str(tmp_path / "cfg"), max_steps=1, reference_cache_dir=str(tmp_path / "ref"))
    config.precision = "fp32"  # an explicit precision is never probed either
    assert train_preference(config, model, examples, 0, tokenizer).precision == "fp32"
    assert not (tmp_path / "cache" / "precision").exists()


def test_the_probe_leaves_parameters_buffers_gradients_and_the_rng_as_they_were():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_layer=2, n_embd=32, n_head=2, n_positions=32, resid_pdrop=0.3, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).train()  # dropout on: the steps draw random numbers
    model.transformer.h[0].attn.register_buffer("seen", torch.zeros(3))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    held = model.transformer.h[0].mlp.c_fc.weight
    held.grad = torch.full_like(held, 0.5)  # a gradient already there
    loss_of, make_batch = _lm_probe(model)

    def count(module, inputs, output) -> None:
        module.seen.add_(1.0)

    model.transformer.h[0].attn.register_forward_hook(count)
    rng = torch.get_rng_state()

    decision = precision.choose_cpu_precision(model, loss_of, make_batch, 8, "step")

    assert decision.source == "measured" and decision.precision in {"bf16", "fp32"} and decision.probe_s > 0
    assert 1 <= decision.items <= 8
    assert torch.equal(torch.get_rng_state(), rng)
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]), name
        assert (p.grad is None) == (p is not held), name
    assert torch.equal(held.grad, torch.full_like(held, 0.5))
    assert torch.equal(model.transformer.h[0].attn.seen, torch.zeros(3))  # the hook ran, its buffer restored
    assert model.training


def test_auto_training_uses_the_decision_and_logs_it_once(
    tiny_model_factory, monkeypatch, tokenizer, examples, tmp_path, capsys
):
    calls: list = []
    monkeypatch.setattr(precision, "measure", _fake_measure(fp32_s=3.0, bf16_s=1.0, calls=calls))
    results = []
    for name in ("one", "two"):
        config = TrainConfig(output_dir=str(tmp_path / name), max_steps=2, reference_cache_dir=str(tmp_path / "ref"))
        results.append(train_preference(config, tiny_model_factory(), examples, 0, tokenizer))
    assert [r.precision for r in results] == ["bf16", "bf16"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for r in results for h in r.history)
    assert calls == [8]  # measured once; the second run reuses the decision
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("precision auto:")]
    assert lines == [
        "precision auto: bf16 3.00x faster than fp32 on this CPU for this model (fwd+bwd 3000 ms fp32, "
        "1000 ms bf16; probe 0.0 s)"
    ]


def test_the_cuda_path_never_probes(monkeypatch, tiny_model_factory):
    monkeypatch.setattr(precision, "measure", _refuse)
    accelerator = SimpleNamespace(device=torch.device("cuda"), mixed_precision="bf16", is_main_process=True)
    model = tiny_model_factory()
    assert not precision.cpu_auto_bf16(TrainConfig(), accelerator, model, None, None, _refuse)
    accelerator = SimpleNamespace(device=torch.device("cpu"), mixed_precision="bf16", is_main_process=True)
    assert not precision.cpu_auto_bf16(TrainConfig(), accelerator, model, None, None, _refuse)  # a user's choice


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_is_what_it_was(monkeypatch, tokenizer, tiny_model_factory, examples, tmp_path):
    from podisco.training.loop import make_accelerator

    monkeypatch.setattr(precision, "measure", _refuse)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "no"
    assert mixed_precision("auto") == expected
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, reference_cache_dir=str(tmp_path / "ref"))
    accelerator = make_accelerator(config)
    assert accelerator.device.type == "cuda" and accelerator.mixed_precision == expected
    result = train_preference(config, tiny_model_factory(), examples, 0, tokenizer, accelerator=accelerator)
    assert result.precision == ("bf16" if expected == "bf16" else "fp32")
