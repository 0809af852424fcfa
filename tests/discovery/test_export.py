import ast
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from podisco.cli.main import main
from podisco.discovery.archive import Archive
from podisco.discovery.export import export_attempt
from podisco.errors import PodiscoError
from podisco.losses.forms import load_loss_file
from podisco.tasks.seeds import CLASSIFICATION_SEEDS, PREFERENCE_SEEDS


def test_export_writes_a_loss_file_that_loads_under_the_contract(tmp_path, capsys):
    archive = Archive(tmp_path / "archive.sqlite")
    archive.create_run("r", {"beta": 0.05}, "imdb", "3-tiny", "bwrap")
    attempt_id = archive.add_proposed("r", 1, 0, "llm", "dpo", 'a "quoted" """thought"""', PREFERENCE_SEEDS["dpo"])
    archive.finish(attempt_id, "evaluated", fitness=0.01)
    assert main(["runs", "show", "r", "--root", str(tmp_path)]) == 0
    assert "dpo" in capsys.readouterr().out
    assert main(["export", "r", "--best", "-o", str(tmp_path / "loss.py"), "--root", str(tmp_path)]) == 0
    label, fn = load_loss_file(f"{tmp_path / 'loss.py'}:dpo")
    assert label.startswith("loss.py:dpo@")
    pc, pr, rc, rr = (torch.randn(6, dtype=torch.float64) for _ in range(4))
    expected = -F.logsigmoid(0.1 * ((pc - pr) - (rc - rr)))
    torch.testing.assert_close(fn(pc, pr, rc, rr, beta=0.1), expected)
    again = export_attempt(archive.attempt(attempt_id), tmp_path / "again.py")
    assert "podisco train --loss again.py:dpo" in again.read_text()


def _archive_with(tmp_path, name: str, code: str):
    archive = Archive(tmp_path / "archive.sqlite")
    archive.create_run("r", {"beta": 0.05}, "imdb", "3-tiny", "bwrap")
    attempt_id = archive.add_proposed("r", 1, 0, "llm", name, "a thought", code)
    archive.finish(attempt_id, "evaluated", fitness=0.02)
    return archive, attempt_id


def _import_without_podisco(path: Path, monkeypatch):
    """Import ``path`` as its own module while every ``podisco`` import fails, as where podisco is not installed."""
    for name in [m for m in sys.modules if m == "podisco" or m.startswith("podisco.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "podisco", None)
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_for_trl_writes_a_stand_alone_file_with_the_candidates_loss(tmp_path, capsys, monkeypatch):
    _, attempt_id = _archive_with(tmp_path, "slic", PREFERENCE_SEEDS["slic"])
    path = tmp_path / "my_loss.py"
    assert main(["export", "r", "--best", "--format", "trl", "-o", str(path), "--root", str(tmp_path)]) == 0
    assert "make_trainer_class" in capsys.readouterr().out
    text = path.read_text()
    assert "from my_loss import make_trainer_class" in text  # usage in the docstring
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"math", "torch", "torch.nn.functional"}
    # The same file through --attempt, and still readable by podisco train --loss FILE:NAME.
    again = tmp_path / "again.py"
    assert (
        main(
            ["export", "r", "--attempt", str(attempt_id), "--format", "trl", "-o", str(again), "--root", str(tmp_path)]
        )
        == 0
    )
    _, podisco_fn = load_loss_file(f"{again}:slic")

    module = _import_without_podisco(path, monkeypatch)
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=torch.float64) * 20 - 40 for _ in range(4))
    want = torch.relu(1 - 0.1 * ((pc - pr) - (rc - rr)))
    got = module.per_pair_loss(pc, pr, rc, rr, beta=0.1, chosen_lengths=torch.ones(16))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(podisco_fn(pc, pr, rc, rr, beta=0.1), want)
    low = module.per_pair_loss(*(t.to(torch.bfloat16) for t in (pc, pr, rc, rr)), beta=0.1)
    assert low.dtype == torch.float32  # computed in float32 or wider, as podisco's contract says
    assert callable(module.make_trainer_class) and callable(module.compute_dpo_loss)


def test_export_for_trl_takes_the_library_form_and_refuses_what_it_cannot_use(tmp_path):
    library = (
        "def lib(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
        "    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))\n"
    )
    archive, attempt_id = _archive_with(tmp_path, "lib", library)
    assert (
        "lib(*inputs, beta=beta)" in export_attempt(archive.attempt(attempt_id), tmp_path / "lib.py", "trl").read_text()
    )
    classification = tmp_path / "c"
    classification.mkdir()
    archive, attempt_id = _archive_with(classification, "cross_entropy", CLASSIFICATION_SEEDS["cross_entropy"])
    with pytest.raises(PodiscoError, match="not a preference loss"):
        export_attempt(archive.attempt(attempt_id), tmp_path / "ce.py", format="trl")
    clash = tmp_path / "clash"
    clash.mkdir()
    archive, attempt_id = _archive_with(clash, "per_pair_loss", PREFERENCE_SEEDS["dpo"].replace("dpo", "per_pair_loss"))
    with pytest.raises(PodiscoError, match="per_pair_loss"):
        export_attempt(archive.attempt(attempt_id), tmp_path / "x.py", format="trl")
    with pytest.raises(PodiscoError, match="unknown export format"):
        export_attempt(archive.attempt(attempt_id), tmp_path / "x.py", format="onnx")


def test_the_exported_trl_trainer_trains(tmp_path, monkeypatch):
    pytest.importorskip("trl", reason="training with the exported file needs TRL: pip install 'podisco[trl]'")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from podisco.models import build_tiny_gpt2
    from tests.training.tiny import make_rows, make_tokenizer

    archive, attempt_id = _archive_with(tmp_path, "slic", PREFERENCE_SEEDS["slic"])
    path = export_attempt(archive.attempt(attempt_id), tmp_path / "slic_trl.py", format="trl")
    tokenizer = make_tokenizer()
    model = build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64)
    pairs = Dataset.from_list(make_rows(8))
    module = _import_without_podisco(path, monkeypatch)  # podisco stays unimportable while TRL trains
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        beta=0.1,
        use_cpu=True,
        precompute_ref_log_probs=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = module.make_trainer_class(DPOTrainer)(
        model=model, args=args, train_dataset=pairs, processing_class=tokenizer
    )
    trainer.train()
    steps = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert len(steps) == 2
    assert steps[0]["loss"] == pytest.approx(1.0, abs=1e-6)  # hinge at rho = 0 (TRL's sigmoid would log 0.693)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # TRL's own metrics still logged
