"""Image-classification data: scikit-learn's bundled 8x8 digits (no download) and CIFAR-10 from a local copy in
its standard python format (``data_batch_1`` .. ``data_batch_5``, ``test_batch``: pickled dicts of uint8
``data`` (N, 3072, channel-major) and ``labels``)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from podisco.errors import PodiscoError


@dataclass(frozen=True)
class ImageSplits:
    train_x: np.ndarray  # float32 (N, C, H, W), scaled to [0, 1]
    train_y: np.ndarray  # int64 (N,)
    val_x: np.ndarray
    val_y: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.val_y.max())) + 1


def load_digits_splits(val_fraction: float = 0.25, split_seed: int = 0) -> ImageSplits:
    """The 1,797 digits, 8x8 grey levels 0-16, split into train / validation, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    tx, vx, ty, vy = train_test_split(x, y, test_size=val_fraction, random_state=split_seed, stratify=y)
    return ImageSplits(tx, ty, vx, vy)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError) as err:
        raise PodiscoError(f"{path}: not a CIFAR-10 python batch ({err!r})") from err
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise PodiscoError(f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape}, {len(labels)}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path, train_batches: int = 5) -> ImageSplits:
    """CIFAR-10 from ``root`` or ``root/cifar-10-batches-py``; the official test batch is the validation split.

    The pickles are the dataset's own distribution format; only load copies you trust.
    """
    root = Path(root).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [
        n for n in [*(f"data_batch_{i}" for i in range(1, train_batches + 1)), "test_batch"] if not (root / n).exists()
    ]
    if missing:
        raise PodiscoError(f"{root}: missing CIFAR-10 file(s) {', '.join(missing)}")
    parts = [_read_batch(root / f"data_batch_{i}") for i in range(1, train_batches + 1)]
    test_x, test_y = _read_batch(root / "test_batch")
    train_x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    train_y = np.concatenate([p[1] for p in parts])
    return ImageSplits(train_x, train_y, test_x.astype(np.float32) / 255.0, test_y)
