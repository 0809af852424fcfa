"""The classification sanity task: baselines learn, a broken loss does not, CIFAR-10 files load, errors are named."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from podisco.errors import PodiscoError
from podisco.losses import UnknownLossError
from podisco.losses.classification import classification_loss_names, get_classification_loss
from podisco.tasks.classification.data import load_cifar10, load_digits_splits
from podisco.tasks.classification.train import DigitsConfig, evaluate_loss

QUICK = DigitsConfig(epochs=4, seeds=(0, 1))


@pytest.fixture(scope="module")
def splits():
    return load_digits_splits()


def test_cross_entropy_ranks_above_a_broken_loss(splits):
    good = evaluate_loss("cross_entropy", QUICK, splits)
    broken = evaluate_loss(lambda z, y: -F.cross_entropy(z, y, reduction="none"), QUICK, splits)
    assert good.ok and broken.ok
    assert good.fitness > 0.9 and broken.fitness < 0.3  # 10 classes: chance is 0.1
    assert len(good.accuracies) == 2 and good.std >= 0


def test_every_baseline_learns(splits):
    for name in classification_loss_names():
        assert evaluate_loss(name, DigitsConfig(epochs=4, seeds=(0,)), splits).fitness > 0.85, name


def test_same_seed_same_fitness(splits):
    assert (
        evaluate_loss("squared_error", QUICK, splits).accuracies
        == evaluate_loss("squared_error", QUICK, splits).accuracies
    )


def test_closed_form_values():
    """logits (0, 0) with target 0: CE = log 2; smoothed (eps 0.1, 2 classes): the same log 2 since p = (1/2, 1/2);
    squared error: (1/2 - 1)^2 + (1/2)^2 = 0.5."""
    z, y = torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)
    assert get_classification_loss("cross_entropy")(z, y).item() == pytest.approx(math.log(2))
    assert get_classification_loss("label_smoothing")(z, y).item() == pytest.approx(math.log(2))
    assert get_classification_loss("squared_error")(z, y).item() == pytest.approx(0.5)
    with pytest.raises(UnknownLossError, match="Did you mean: cross_entropy"):
        get_classification_loss("cross_entrpy")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda z, y: F.cross_entropy(z, y), "must return shape"),
        (lambda z, y: F.cross_entropy(z, y, reduction="none") * float("nan"), "non-finite loss at epoch 0"),
    ],
)
def test_failing_candidates_are_reported_not_raised(splits, bad, message):
    result = evaluate_loss(bad, QUICK, splits)
    assert not result.ok and math.isnan(result.fitness) and message in result.error and "seed 0" in result.error


def _write_cifar_fixture(root, n=20):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return folder


def test_cifar10_loader_reads_the_python_format(tmp_path):
    folder = _write_cifar_fixture(tmp_path)
    splits = load_cifar10(tmp_path)
    assert splits.train_x.shape == (100, 3, 32, 32) and splits.val_x.shape == (20, 3, 32, 32)
    assert splits.train_x.dtype == np.float32 and splits.train_x.min() >= 0 and splits.train_x.max() <= 1
    with open(folder / "data_batch_1", "rb") as fh:
        first = pickle.load(fh, encoding="bytes")
    np.testing.assert_allclose(splits.train_x[0, 0, 0, :3], first[b"data"][0, :3] / 255.0)  # red channel, row 0
    result = evaluate_loss(
        "cross_entropy", DigitsConfig(dataset="cifar10", data_dir=str(tmp_path), epochs=1, seeds=(0,))
    )
    assert result.ok and 0 <= result.fitness <= 1


def test_cifar10_missing_or_corrupt_files_are_named(tmp_path):
    with pytest.raises(PodiscoError, match="missing CIFAR-10 file"):
        load_cifar10(tmp_path)
    folder = _write_cifar_fixture(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(PodiscoError, match="test_batch: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


def test_task_command(capsys):
    from podisco.cli.main import main

    assert main(["task", "digits", "--loss", "label_smoothing", "--seeds", "0", "--epochs", "2"]) == 0
    assert "digits v1 (digits) label_smoothing: fitness 0." in capsys.readouterr().out
    assert main(["task", "digits", "--loss", "squared_eror"]) == 2
    assert "Did you mean: squared_error" in capsys.readouterr().err
