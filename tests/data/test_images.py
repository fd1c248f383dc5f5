"""Image datamodules on offline data: sklearn digits, synthetic IDX files, generated PNGs, and
the error for missing CIFAR-10 files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit.data.images import (
    CIFAR10DataModule,
    DatasetNotFoundError,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)


def test_digits_are_sklearn_digits_scaled_with_disjoint_splits():
    from sklearn.datasets import load_digits

    raw = load_digits()
    dm = DigitsDataModule(batch_size=32, num_val=100, num_test=297)
    assert dm.data_shape == (1, 8, 8) and dm.num_classes is None  # known before setup
    assert DigitsDataModule(conditional=True).num_classes == 10
    dm.setup()
    train, val, ref = dm.split("train"), dm.split("val"), dm.split("reference")
    assert (len(train), len(val), len(ref)) == (1797 - 397, 100, 297)
    # Every image is an sklearn image mapped by x / 8 - 1, and the three splits partition them.
    flat = torch.as_tensor(raw.images.reshape(1797, -1), dtype=torch.float64) / 8 - 1
    keys = {tuple(r.tolist()) for r in flat}
    seen = []
    for split in (train, val, ref):
        x = split.__getitems__(list(range(len(split))))["x"].double().reshape(len(split), -1)
        rows = [tuple(r.tolist()) for r in x]
        assert set(rows) <= keys
        seen.extend(rows)
    assert len(seen) == 1797 and len(set(seen)) == len(set(keys))
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (32, 1, 8, 8) and batch["x"].dtype == torch.float32
    assert batch["y"].dtype == torch.long and float(batch["x"].min()) >= -1
    ref_x = dm.reference_samples(50)
    assert ref_x.shape == (50, 1, 8, 8) and torch.equal(ref_x, dm.reference_samples(50))
    with pytest.raises(ValueError, match="needs 1 <= n <= 297"):
        dm.reference_samples(298)


def _write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">ii", 2049, n) + labels.astype(np.uint8).tobytes()
    )


@pytest.mark.parametrize(
    ("cls", "folder"), [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")]
)
def test_mnist_family_reads_idx_files(tmp_path, cls, folder):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    raw = tmp_path / folder / "raw"
    _write_idx(raw, "train", train, rng.integers(0, 10, 60))
    _write_idx(raw, "t10k", test, rng.integers(0, 10, 20))
    dm = cls(root=str(tmp_path), num_val=10, batch_size=8)
    assert dm.data_shape == (1, 28, 28)
    dm.setup()
    assert len(dm.split("train")) == 50 and len(dm.split("val")) == 10
    ref = dm.reference_samples(20, generator=torch.Generator().manual_seed(0))
    want = torch.as_tensor(test, dtype=torch.float32)[:, None] / 127.5 - 1
    # The held-out split is the t10k file, each pixel v mapped to v / 127.5 - 1.
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ref, want[order], rtol=0, atol=1e-6)
    big = cls(root=str(tmp_path), image_size=32, num_val=10)
    assert big.data_shape == (1, 32, 32)
    assert big.reference_samples(3).shape == (3, 1, 32, 32)


def test_cifar10_missing_files_error_names_root_files_and_download(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path / "nowhere"))
    assert dm.data_shape == (3, 32, 32)  # known without any file
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert str((tmp_path / "nowhere").resolve()) in msg
    for name in (
        "data_batch_1",
        "data_batch_5",
        "test_batch",
        "batches.meta",
        "cifar-10-batches-py",
    ):
        assert name in msg
    assert "download: true" in msg
    assert isinstance(info.value, LookupError) and isinstance(info.value, FileNotFoundError)
    # No chained torchvision traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_cifar10_non_genuine_files_fail_the_md5_check_with_the_same_advice(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"):
        (base / name).write_bytes(b"not cifar")
    with pytest.raises(DatasetNotFoundError, match="failed torchvision's check") as info:
        CIFAR10DataModule(root=str(tmp_path)).setup()
    assert "download: true" in str(info.value) and info.value.__cause__ is None
    assert info.value.__suppress_context__  # torchvision's RuntimeError is not shown


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_resizes_crops_and_labels_class_folders(tmp_path):
    colors = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    for cls, color in colors.items():
        for i in range(6):
            _png(tmp_path / cls / f"{i}.png", color, (40 + 4 * i, 24))  # non-square sizes
    dm = ImageFolderDataModule(
        root=str(tmp_path), image_size=16, num_test=4, num_val=2, batch_size=3, conditional=True
    )
    assert dm.data_shape == (3, 16, 16) and dm.num_classes == 2
    dm.setup()
    assert len(dm.split("train")) == 6 and len(dm.split("val")) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (3, 3, 16, 16) and batch["y"].dtype == torch.long
    # A flat colour survives resize + crop: red -> (1, -1, -1), blue -> (-1, -1, 1).
    expect = {0: torch.tensor([-1.0, -1.0, 1.0]), 1: torch.tensor([1.0, -1.0, -1.0])}
    for x, y in zip(batch["x"], batch["y"], strict=True):
        torch.testing.assert_close(x.mean((1, 2)), expect[int(y)], atol=1e-6, rtol=0)
    assert dm.reference_samples(4).shape == (4, 3, 16, 16)


def test_image_folder_flat_grey_and_errors(tmp_path):
    for i in range(5):
        _png(tmp_path / "flat" / f"{i}.jpg", (128, 128, 128), (20, 20))
    dm = ImageFolderDataModule(
        root=str(tmp_path / "flat"), image_size=8, channels=1, num_test=1, num_val=1, batch_size=2
    )
    assert dm.num_classes is None and dm.data_shape == (1, 8, 8)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x"} and batch["x"].shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="conditional=True needs labelled data"):
        ImageFolderDataModule(root=str(tmp_path / "flat"), conditional=True)
    with pytest.raises(DatasetNotFoundError, match="is not a directory"):
        ImageFolderDataModule(root=str(tmp_path / "missing")).setup()
