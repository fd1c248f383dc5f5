"""Image datamodules: sklearn digits, MNIST, Fashion-MNIST, CIFAR-10 and a folder of images.

Batches are ``{"x": (B, C, H, W) float32 in [-1, 1], "y": (B,) long}`` (``y`` when the data
has labels). ``data_shape`` and ``num_classes`` are known in ``__init__``; ``num_classes`` is set
only with ``conditional=True`` (the CLI links it into the model, which then conditions on ``y``).

Splits: the training files minus ``num_val`` images (a seeded choice) train; those ``num_val``
images give ``val/loss``; the official test files (digits and folders: ``num_test`` images held
out by the same seeded permutation) are the held-out data of :meth:`reference_samples`, never
seen in training. Random horizontal flips are drawn per sample on the device in
``on_after_batch_transfer`` from a generator seeded by ``(seed, rank, global step)``, so a
resumed run flips exactly as an uninterrupted one.

torchvision datasets never download unless ``download: true``; missing files raise
:class:`DatasetNotFoundError` naming the root, the files expected and that option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffkit.data.base import DiffusionDataModule
from diffkit.data.gmm import collate_dict
from diffkit.data.shuffle import epoch_shuffle
from diffkit.seeding import step_generator

__all__ = [
    "CIFAR10DataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "ImageTensorDataset",
    "MNISTDataModule",
]

Split = Literal["train", "val", "reference"]


class DatasetNotFoundError(FileNotFoundError, LookupError):
    """Dataset files are missing (or fail their integrity check) under ``root``."""


def to_unit_range(images: Tensor, max_value: float) -> Tensor:
    """Integer pixels in ``[0, max_value]`` -> float32 in ``[-1, 1]``."""
    return images.float().mul_(2.0 / max_value).sub_(1.0)


class ImageTensorDataset(Dataset):
    """In-memory integer images ``(N, C, H, W)`` (and labels), served a batch at a time."""

    def __init__(self, images: Tensor, labels: Tensor | None, max_value: float) -> None:
        self.images, self.labels, self.max_value = images, labels, float(max_value)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {"x": to_unit_range(self.images[idx], self.max_value)}
        if self.labels is not None:
            batch["y"] = self.labels[idx]
        return batch


class ImageFileDataset(Dataset):
    """Image files decoded on access (PIL), resized and centre-cropped to ``image_size``."""

    def __init__(
        self, files: list[str], labels: list[int] | None, image_size: int, channels: int
    ) -> None:
        from torchvision import transforms

        self.files, self.labels = files, labels
        self.transform = transforms.Compose(
            [
                transforms.Resize(image_size, antialias=True),
                transforms.CenterCrop(image_size),
                transforms.PILToTensor(),
            ]
        )
        self.mode = "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            pixels = self.transform(img.convert(self.mode))
        item = {"x": to_unit_range(pixels, 255.0)}
        if self.labels is not None:
            item["y"] = torch.tensor(self.labels[i], dtype=torch.long)
        return item


class ImageDataModule(DiffusionDataModule):
    """Shared splits, loaders, flips and held-out samples of the image datamodules.

    Subclasses set ``data_shape``, ``num_classes``, ``label_count`` and implement
    :meth:`load_split` (``"train"`` or ``"test"`` files) returning a dataset.
    """

    label_count: int | None = None
    data_range: tuple[float, float] | None = (-1.0, 1.0)

    def __init__(
        self,
        batch_size: int,
        num_val: int,
        random_flip: bool,
        conditional: bool,
        num_workers: int,
        seed: int,
    ) -> None:
        super().__init__()
        name = self.dataset_name()
        for field, value, low in (("batch_size", batch_size, 1), ("num_val", num_val, 0)):
            if value < low:
                raise ValueError(f"{name}: {field} must be >= {low}, got {value}")
        if num_workers < 0:
            raise ValueError(f"{name}: num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.num_val, self.random_flip = int(batch_size), int(num_val), random_flip
        self.conditional, self.num_workers, self.seed = conditional, int(num_workers), int(seed)
        self._splits: dict[str, Dataset] = {}

    @classmethod
    def dataset_name(cls) -> str:
        return cls.__name__.removesuffix("DataModule").lower()

    def _set_labels(self, count: int | None) -> None:
        if self.conditional and count is None:
            raise ValueError(
                f"{self.dataset_name()}: conditional=True needs labelled data (class folders)"
            )
        self.label_count = count
        self.num_classes = count if self.conditional else None

    # ------------------------------------------------------------------ to implement
    def load_split(self, split: Literal["train", "test"]) -> Dataset:
        """The dataset of the official ``train`` or held-out ``test`` files."""
        raise NotImplementedError

    # ------------------------------------------------------------------ splits
    def _permutation(self, n: int, salt: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000 + salt)
        return torch.randperm(n, generator=g)

    def split(self, name: Split) -> Dataset:
        """``train``, ``val`` (``num_val`` images of the training files) or ``reference``."""
        if name not in self._splits:
            if name == "reference":
                self._splits[name] = self.load_split("test")
            else:
                full = self.load_split("train")
                if self.num_val >= len(full):
                    raise ValueError(
                        f"{self.dataset_name()}: num_val={self.num_val} leaves no training "
                        f"images out of {len(full)}"
                    )
                perm = self._permutation(len(full), salt=11)
                self._splits["val"] = _subset(full, perm[: self.num_val])
                self._splits["train"] = _subset(full, perm[self.num_val :])
        return self._splits[name]

    def setup(self, stage: str | None = None) -> None:
        self.split("train")

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` held-out images ``(n, *data_shape)`` in [-1, 1] (no flips), drawn without
        replacement (default generator seeded from ``seed``: repeated calls agree)."""
        data = self.split("reference")
        if not 1 <= n <= len(data):
            raise ValueError(
                f"{self.dataset_name()}: reference_samples(n={n}) needs 1 <= n <= {len(data)} "
                "(the size of the held-out split)"
            )
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed * 1000 + 13)
        idx = torch.randperm(len(data), generator=generator)[:n].tolist()
        return _fetch(data, idx)["x"]

    # ------------------------------------------------------------------ loaders
    def _loader(self, name: Split, shuffle: bool) -> DataLoader:
        data = self.split(name)
        batched = hasattr(data, "__getitems__")
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=epoch_shuffle(data, self.seed, self.trainer) if shuffle else None,
            drop_last=shuffle and len(data) >= self.batch_size,
            collate_fn=collate_dict if batched else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.num_val == 0:
            return []  # type: ignore[return-value]
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("reference", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Random horizontal flips of training batches, seeded by (seed, rank, global step)."""
        trainer = self.trainer
        if not (self.random_flip and trainer is not None and trainer.training):
            return batch
        x = batch["x"]
        g = step_generator(self.seed, trainer.global_rank, trainer.global_step, stream=7)
        flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
        flip = flip.view(-1, *([1] * (x.dim() - 1)))
        return {**batch, "x": torch.where(flip, x.flip(-1), x)}


def _subset(data: Dataset, idx: Tensor) -> Dataset:
    if isinstance(data, ImageTensorDataset):
        labels = None if data.labels is None else data.labels[idx]
        return ImageTensorDataset(data.images[idx], labels, data.max_value)
    if isinstance(data, ImageFileDataset):
        sub = ImageFileDataset.__new__(ImageFileDataset)
        sub.__dict__.update(data.__dict__)
        sub.files = [data.files[i] for i in idx.tolist()]
        sub.labels = None if data.labels is None else [data.labels[i] for i in idx.tolist()]
        return sub
    raise TypeError(f"cannot split a {type(data).__name__}")


def _fetch(data: Dataset, idx: list[int]) -> dict[str, Tensor]:
    if hasattr(data, "__getitems__"):
        return data.__getitems__(idx)
    items = [data[i] for i in idx]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def _resize(images: Tensor, image_size: int | None) -> Tensor:
    """uint8 ``(N, C, H, W)`` resized (bilinear, antialiased) to ``image_size`` squared."""
    if image_size is None or images.shape[-1] == image_size == images.shape[-2]:
        return images
    out = F.interpolate(
        images.float(),
        size=(image_size, image_size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------- sklearn digits
class DigitsDataModule(ImageDataModule):
    """sklearn's bundled 8x8 digits (1797 images, 17 grey levels, 10 classes), offline.

    Pixels ``0..16`` are scaled to [-1, 1]; ``data_shape = (1, 8, 8)``, or ``(1, s, s)`` with
    ``image_size = s`` (bilinear, antialiased resize of the images mapped to 0..255).
    ``num_test`` images (a seeded choice) are held out for metrics, ``num_val`` more for the
    validation loss.
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_val: int = 100,
        num_test: int = 297,
        image_size: int | None = None,
        random_flip: bool = False,
        conditional: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_val, random_flip, conditional, num_workers, seed)
        self.save_hyperparameters()
        if not 1 <= num_test < 1797:
            raise ValueError(f"digits: num_test must be in [1, 1796], got {num_test}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"digits: image_size must be >= 1 or null, got {image_size}")
        self.num_test = int(num_test)
        self.image_size = None if image_size in (None, 8) else int(image_size)
        side = self.image_size or 8
        self.data_shape = (1, side, side)
        self._set_labels(10)

    def load_split(self, split: Literal["train", "test"]) -> Dataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.from_numpy(np.asarray(bunch.images, dtype=np.uint8)).unsqueeze(1)
        labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
        perm = self._permutation(len(images), salt=17)
        idx = perm[: self.num_test] if split == "test" else perm[self.num_test :]
        if self.image_size is None:
            return ImageTensorDataset(images[idx], labels[idx], max_value=16.0)
        # 17 grey levels to 0..255 first, so the resized images keep their interpolated levels
        wide = (images[idx].float() * (255.0 / 16.0)).round().to(torch.uint8)
        return ImageTensorDataset(_resize(wide, self.image_size), labels[idx], max_value=255.0)


# ---------------------------------------------------------------------- torchvision files
class _TorchvisionImages(ImageDataModule):
    """torchvision datasets read from ``root`` (``download=False`` unless asked)."""

    native_shape: tuple[int, int, int] = (1, 28, 28)
    how_to_get: str = ""

    def __init__(
        self,
        root: str,
        download: bool,
        image_size: int | None,
        batch_size: int,
        num_val: int,
        random_flip: bool,
        conditional: bool,
        num_workers: int,
        seed: int,
    ) -> None:
        super().__init__(batch_size, num_val, random_flip, conditional, num_workers, seed)
        if image_size is not None and image_size < 1:
            raise ValueError(f"{self.dataset_name()}: image_size must be >= 1, got {image_size}")
        self.root, self.download, self.image_size = root, download, image_size
        c, h, w = self.native_shape
        self.data_shape = (c, image_size or h, image_size or w)
        self._set_labels(10)

    def expected_files(self) -> list[Path]:
        """The files torchvision reads under ``root``."""
        raise NotImplementedError

    def torchvision_dataset(self, train: bool, download: bool) -> Any:
        raise NotImplementedError

    def _missing(self) -> list[Path]:
        return [p for p in self.expected_files() if not p.is_file()]

    def _not_found(self, detail: str) -> DatasetNotFoundError:
        root = Path(self.root).expanduser().resolve()
        listed = "\n".join(f"  {p}" for p in self.expected_files())
        return DatasetNotFoundError(
            f"{self.dataset_name()}: {detail} under root '{root}'. Expected these files:\n"
            f"{listed}\n{self.how_to_get}\n"
            f"Either place them there, point `data.init_args.root` at the directory that holds "
            f"them, or set `data.init_args.download: true` to let torchvision download them "
            f"(needs internet)."
        )

    def prepare_data(self) -> None:
        if self.download and self._missing():
            try:
                self.torchvision_dataset(train=True, download=True)
                self.torchvision_dataset(train=False, download=True)
            except Exception as err:
                raise self._not_found(
                    f"the download failed ({type(err).__name__}: {err})"
                ) from None

    def load_split(self, split: Literal["train", "test"]) -> Dataset:
        missing = self._missing()
        if missing:
            raise self._not_found(f"{len(missing)} dataset file(s) are missing")
        try:
            ds = self.torchvision_dataset(train=split == "train", download=False)
        except RuntimeError as err:  # torchvision's "not found or corrupted" (CIFAR MD5 check)
            raise self._not_found(f"the files failed torchvision's check ({err})") from None
        data = ds.data
        images = torch.as_tensor(np.asarray(data))
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        return ImageTensorDataset(_resize(images.contiguous(), self.image_size), labels, 255.0)


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTDataModule(_TorchvisionImages):
    """MNIST (1 x 28 x 28, 10 classes) from ``root/MNIST/raw/`` (uncompressed IDX files).

    Args:
        root: directory holding ``MNIST/raw/``.
        download: let torchvision download the files (needs internet).
        image_size: resize to ``image_size`` squared (e.g. 32 for U-Nets); ``None`` keeps 28.
        batch_size, num_val, random_flip, conditional, num_workers, seed: see
            :class:`ImageDataModule`.
    """

    native_shape = (1, 28, 28)
    folder = "MNIST"
    how_to_get = "These are the four uncompressed IDX files of MNIST (gunzip the .gz files)."

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        batch_size: int = 128,
        num_val: int = 1000,
        random_flip: bool = False,
        conditional: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root,
            download,
            image_size,
            batch_size,
            num_val,
            random_flip,
            conditional,
            num_workers,
            seed,
        )
        self.save_hyperparameters()

    def expected_files(self) -> list[Path]:
        raw = Path(self.root).expanduser().resolve() / self.folder / "raw"
        return [raw / name for name in _IDX_FILES]

    def torchvision_dataset(self, train: bool, download: bool) -> Any:
        from torchvision import datasets

        cls = getattr(datasets, self.folder)
        return cls(self.root, train=train, download=download)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (1 x 28 x 28, 10 classes) from ``root/FashionMNIST/raw/``; arguments as
    :class:`MNISTDataModule`."""

    folder = "FashionMNIST"
    how_to_get = (
        "These are the four uncompressed IDX files of Fashion-MNIST (gunzip the .gz files)."
    )

    @classmethod
    def dataset_name(cls) -> str:
        return "fashion_mnist"


_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")


class CIFAR10DataModule(_TorchvisionImages):
    """CIFAR-10 (3 x 32 x 32, 10 classes) from ``root/cifar-10-batches-py/``.

    Args:
        root: directory holding ``cifar-10-batches-py/``.
        download: let torchvision download the archive (needs internet).
        image_size: resize to ``image_size`` squared; ``None`` keeps 32.
        random_flip: random horizontal flips (on by default, as in DDPM/NCSN++ training).
        batch_size, num_val, conditional, num_workers, seed: see :class:`ImageDataModule`.
    """

    native_shape = (3, 32, 32)
    how_to_get = (
        "They come from the 'python version' archive cifar-10-python.tar.gz "
        "(https://www.cs.toronto.edu/~kriz/cifar.html), extracted; torchvision checks each "
        "file's MD5."
    )

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        batch_size: int = 128,
        num_val: int = 1000,
        random_flip: bool = True,
        conditional: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root,
            download,
            image_size,
            batch_size,
            num_val,
            random_flip,
            conditional,
            num_workers,
            seed,
        )
        self.save_hyperparameters()

    def expected_files(self) -> list[Path]:
        base = Path(self.root).expanduser().resolve() / "cifar-10-batches-py"
        return [base / name for name in _CIFAR_FILES]

    def torchvision_dataset(self, train: bool, download: bool) -> Any:
        from torchvision.datasets import CIFAR10

        return CIFAR10(self.root, train=train, download=download)


# ---------------------------------------------------------------------- folders
def _image_files(directory: Path) -> list[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(
        str(p) for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
    )


class ImageFolderDataModule(ImageDataModule):
    """Images under ``root``: class sub-folders (torchvision ``ImageFolder`` layout, labels
    from folder names in sorted order) or a flat folder (no labels).

    Images are decoded on access (use ``num_workers``), converted to ``channels``, resized so the
    short side is ``image_size`` and centre-cropped to ``image_size`` squared. ``num_test``
    images (seeded choice) are held out for metrics.

    Args:
        root: the folder.
        image_size: side of the square images.
        channels: 3 (RGB) or 1 (grey).
        num_test: held-out images for :meth:`reference_samples`.
        batch_size, num_val, random_flip, conditional, num_workers, seed: see
            :class:`ImageDataModule`.
    """

    @classmethod
    def dataset_name(cls) -> str:
        return "image_folder"

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: Literal[1, 3] = 3,
        num_test: int = 100,
        batch_size: int = 64,
        num_val: int = 100,
        random_flip: bool = True,
        conditional: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_val, random_flip, conditional, num_workers, seed)
        self.save_hyperparameters()
        if image_size < 1 or channels not in (1, 3) or num_test < 1:
            raise ValueError(
                f"image_folder: need image_size >= 1, channels in (1, 3), num_test >= 1; got "
                f"image_size={image_size}, channels={channels}, num_test={num_test}"
            )
        self.root, self.image_size, self.channels = root, int(image_size), int(channels)
        self.num_test = int(num_test)
        self.data_shape = (self.channels, self.image_size, self.image_size)
        self._classes: list[str] | None = None
        self._set_labels((len(self.classes()) or None) if conditional else None)

    def _root(self) -> Path:
        root = Path(self.root).expanduser().resolve()
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"image_folder: root '{root}' is not a directory; set `data.init_args.root` to a "
                "folder of images (or of class sub-folders of images)"
            )
        return root

    def classes(self) -> list[str]:
        """Sorted class folder names (empty for a flat folder)."""
        if self._classes is None:
            root = self._root()
            subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir())
            self._classes = [d for d in subdirs if _image_files(root / d)]
        return self._classes

    def load_split(self, split: Literal["train", "test"]) -> Dataset:
        root, classes = self._root(), self.classes()
        if classes:
            per_class = [_image_files(root / c) for c in classes]
            files = [f for fs in per_class for f in fs]
            labels: list[int] | None = [k for k, fs in enumerate(per_class) for _ in fs]
        else:
            files, labels = _image_files(root), None
        if len(files) <= self.num_test:
            raise DatasetNotFoundError(
                f"image_folder: found {len(files)} image(s) under '{root}', need more than "
                f"num_test={self.num_test} (lower num_test or add images)"
            )
        perm = self._permutation(len(files), salt=17)
        idx = perm[: self.num_test] if split == "test" else perm[self.num_test :]
        full = ImageFileDataset(files, labels, self.image_size, self.channels)
        return _subset(full, idx)
