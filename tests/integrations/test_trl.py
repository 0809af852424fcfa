"""TRL 1.16's DPOTrainer with a podisco loss trains like podisco's own trainer with that loss.

Both get the same tiny GPT-2 (built from a config), the same pairs in the same order (podisco's epoch-0
permutation, fed to TRL through a sequential sampler), precomputed reference log-probs, the same optimiser,
schedule, clipping and beta, fp32 on the CPU. Per-step losses (and TRL's reward metrics, computed by TRL's own
code) agree within 1e-4 over 20 steps, for registered losses, an exported discovery file given as
``loss.py:NAME``, and the stand-alone file of ``export --format trl``.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

pytest.importorskip("trl", reason="the TRL integration needs TRL 1.16: pip install 'podisco[trl]'")

import torch
from datasets import Dataset
from torch.utils.data import SequentialSampler
from trl import DPOConfig, DPOTrainer

from podisco.data import tokenize_pairs, validate_rows
from podisco.discovery.archive import Archive
from podisco.discovery.export import export_attempt
from podisco.errors import PodiscoError
from podisco.integrations.trl import PodiscoDPOTrainer, resolve_trl_loss
from podisco.losses import UnknownLossError, get_loss
from podisco.losses.forms import load_loss_file
from podisco.models import build_tiny_gpt2
from podisco.training.config import TrainConfig
from podisco.training.loop import epoch_order
from podisco.training.preference import train_preference
from tests.training.tiny import make_rows, make_tokenizer

pytestmark = pytest.mark.integration

PAIRS, BATCH, STEPS, SEED, LR, BETA, MAX_LENGTH = 80, 4, 20, 0, 1e-3, 0.1, 64
# Measured: about 3e-7. Training discopop with TRL's own sigmoid gradient instead moves rewards/chosen by 0.06
# within these 20 steps, so the tolerance tells a wrong gradient apart, not only a wrong logged loss.
TOLERANCE = 1e-4
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")

# A hinge-like loss as a proposer writes one (the paper's method form): squared hinge on beta * rho.
SQ_HINGE = """def sq_hinge(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
             reference_rejected_logps):
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return 0.5 * torch.relu(1 - self.beta * logits) ** 2
"""


def _rows() -> list[dict[str, str]]:
    rows, _ = validate_rows(make_rows(PAIRS, seed=3))
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def _model():
    return build_tiny_gpt2(len(make_tokenizer()), n_layer=2, n_embd=32, n_head=2, n_positions=MAX_LENGTH, seed=SEED)


def _podisco_history(tmp_path, loss) -> list[dict[str, float]]:
    tokenizer = make_tokenizer()
    examples, _ = tokenize_pairs(validate_rows(_rows())[0], tokenizer, max_length=MAX_LENGTH)
    assert len(examples) == PAIRS
    config = TrainConfig(output_dir=str(tmp_path / "podisco"), reference_cache_dir=str(tmp_path / "cache"))
    config.batch_size, config.max_steps, config.seed = BATCH, STEPS, SEED
    config.precision, config.save_model = "fp32", False
    config.data.layout = "concat"  # TRL's layout: prompt + completion per sequence
    config.loss.beta = BETA
    config.optim.lr, config.optim.schedule, config.optim.warmup_ratio = LR, "linear", 0.0
    return train_preference(config, _model(), examples, 0, tokenizer, loss=loss).history


def _trl_trainer(tmp_path, trainer_class, precompute: bool = True, **trainer_kwargs):
    class InOrder(trainer_class):
        """The pairs in the dataset's order, which is podisco's epoch-0 permutation."""

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    rows = _rows()
    dataset = Dataset.from_list([rows[i] for i in epoch_order(len(rows), SEED, 0)])
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0,
        beta=BETA,
        max_length=MAX_LENGTH,
        bf16=False,
        use_cpu=True,
        precompute_ref_log_probs=precompute,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return InOrder(
        model=_model(), args=args, train_dataset=dataset, processing_class=make_tokenizer(), **trainer_kwargs
    )


def _trl_history(tmp_path, trainer_class, **trainer_kwargs) -> list[dict[str, float]]:
    trainer = _trl_trainer(tmp_path, trainer_class, **trainer_kwargs)
    trainer.train()
    return _steps(trainer)


def _steps(trainer) -> list[dict[str, float]]:
    return [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]


def _max_differences(ours, theirs) -> dict[str, float]:
    assert len(ours) == len(theirs) == STEPS
    return {key: max(abs(a[key] - b[key]) for a, b in zip(ours, theirs, strict=True)) for key in ("loss", *METRICS)}


def _export(tmp_path, format: str):
    archive = Archive(tmp_path / f"archive_{format}.sqlite")
    archive.create_run("r", {"beta": BETA}, "imdb", "3-tiny", "bwrap")
    attempt_id = archive.add_proposed("r", 1, 0, "llm", "sq_hinge", "a squared hinge", SQ_HINGE)
    archive.finish(attempt_id, "evaluated", fitness=0.01)
    return export_attempt(archive.attempt(attempt_id), tmp_path / f"sq_hinge_{format}.py", format=format)


def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loss", ["sigmoid", "discopop", "aqfl", "exported"])
def test_trl_with_a_podisco_loss_trains_like_podisco(tmp_path, loss):
    if loss == "exported":
        spec = f"{_export(tmp_path, 'podisco')}:sq_hinge"
        ours = _podisco_history(tmp_path, load_loss_file(spec)[1])
        theirs = _trl_history(tmp_path, PodiscoDPOTrainer, loss=spec)
    else:
        ours = _podisco_history(tmp_path, loss)
        theirs = _trl_history(tmp_path, PodiscoDPOTrainer, loss=loss)
    differences = _max_differences(ours, theirs)
    assert max(differences.values()) < TOLERANCE, differences
    assert ours[-1]["loss"] != pytest.approx(ours[0]["loss"], abs=1e-3)  # it trained: the comparison means something
    if loss != "sigmoid":  # and TRL did not train with its own loss: at step 1 (rho = 0) that is log 2
        assert theirs[0]["loss"] != pytest.approx(math.log(2), abs=1e-2)


def test_trls_logs_are_unchanged(tmp_path):
    """Every key TRL logs (logits, entropy, token counts too) is what plain DPOTrainer logs with its sigmoid loss."""
    plain = _trl_history(tmp_path / "plain", DPOTrainer)
    ours = _trl_history(tmp_path / "ours", PodiscoDPOTrainer, loss="sigmoid")
    assert [sorted(h) for h in ours] == [sorted(h) for h in plain]
    for a, b in zip(ours, plain, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_without_precomputed_reference_the_reference_runs_once_per_batch(tmp_path):
    reference = _model()
    calls = []
    reference.register_forward_hook(lambda *_: calls.append(1))
    trainer = _trl_trainer(tmp_path, PodiscoDPOTrainer, precompute=False, ref_model=reference, loss="discopop")
    # Before any update policy == reference, rho = 0: discopop is 0.5 * log 2 + 0.5 * exp(0). Evaluation goes
    # through the deprecated return_outputs path of _compute_loss.
    evaluation = trainer.evaluate(trainer.train_dataset.select(range(8)))
    assert evaluation["eval_loss"] == pytest.approx(0.5 * math.log(2) + 0.5, abs=1e-6)
    assert len(calls) == 1  # one reference forward for the one evaluation batch
    calls.clear()
    trainer.train()
    assert len(calls) == STEPS
    precomputed = _trl_history(tmp_path / "pre", PodiscoDPOTrainer, loss="discopop")
    assert max(_max_differences(_steps(trainer), precomputed).values()) < 1e-6


def test_the_stand_alone_trl_export_trains_like_podisco(tmp_path):
    module = _import(_export(tmp_path, "trl"))
    ours = _podisco_history(tmp_path, load_loss_file(f"{_export(tmp_path, 'podisco')}:sq_hinge")[1])
    theirs = _trl_history(tmp_path, module.make_trainer_class(DPOTrainer))
    differences = _max_differences(ours, theirs)
    assert max(differences.values()) < TOLERANCE, differences


def test_a_combination_matches_its_components():
    fn, params = resolve_trl_loss({"sigmoid": 0.5, "ipo": 0.5}, label_smoothing=0.0)
    pc, pr, rc, rr = (torch.randn(6, dtype=torch.float64) - 20 for _ in range(4))
    lengths = {"chosen_lengths": torch.full((6,), 5.0), "rejected_lengths": torch.full((6,), 7.0)}
    want = 0.5 * get_loss("sigmoid")(pc, pr, rc, rr, beta=0.1, **lengths) + 0.5 * get_loss("ipo")(
        pc, pr, rc, rr, beta=0.1, **lengths
    )
    torch.testing.assert_close(fn(pc, pr, rc, rr, beta=0.1, **lengths, **params), want)
    assert params == {"label_smoothing": 0.0}


def test_dpo_config_values_fill_the_loss_hyperparameters():
    assert resolve_trl_loss("discopop", discopop_tau=0.2)[1] == {"tau": 0.2}
    assert resolve_trl_loss("exo_pair")[1] == {"label_smoothing": 1e-3}  # TRL's 0.0 means "not set" here
    assert resolve_trl_loss("exo_pair", label_smoothing=0.1)[1] == {"label_smoothing": 0.1}
    assert resolve_trl_loss("exo_pair", {"label_smoothing": 0.2}, label_smoothing=0.1)[1] == {"label_smoothing": 0.2}
    assert resolve_trl_loss("aqfl", label_smoothing=0.1)[1] == {}
    with pytest.raises(PodiscoError, match="takes no parameter 'tau'"):
        resolve_trl_loss("sigmoid", {"tau": 0.1})
    with pytest.raises(PodiscoError, match="no component"):
        resolve_trl_loss({"sigmoid": 1.0, "ipo": 1.0}, {"gamma": 0.1})
    with pytest.raises(UnknownLossError, match="discopop"):
        resolve_trl_loss("discopopp")
    with pytest.raises(PodiscoError, match="does not exist"):
        resolve_trl_loss("missing.py:f")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"loss_type": ["ipo"]}, "loss_type"),
        ({"f_divergence_type": "js_divergence"}, "f_divergence_type"),
        ({"ld_alpha": 0.5}, "ld_alpha"),
        ({"use_weighting": True}, "use_weighting"),
    ],
)
def test_settings_of_trls_own_loss_are_refused_before_any_work(tmp_path, setting, message):
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **setting)
    with pytest.raises(PodiscoError, match=message):
        PodiscoDPOTrainer(model=None, args=args, train_dataset=None, loss="sigmoid")
