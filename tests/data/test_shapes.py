"""The procedural ``shapes`` datamodule and digits upscaled with ``image_size``."""

from __future__ import annotations

import pytest
import torch

from diffkit.data.images import DigitsDataModule
from diffkit.data.shapes import ShapesDataModule, render_shapes


def test_shapes_are_seeded_in_range_and_labelled() -> None:
    dm = ShapesDataModule(num_train=300, num_test=100, num_val=20, conditional=True, seed=3)
    assert dm.data_shape == (3, 16, 16) and dm.num_classes == 3 and dm.data_range == (-1.0, 1.0)
    dm.setup()
    train = dm.split("train")
    assert len(train) == 280 and len(dm.split("val")) == 20
    batch = next(iter(dm.train_dataloader()))
    x, y = batch["x"], batch["y"]
    assert x.shape == (128, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert set(y.tolist()) == {0, 1, 2}
    ref = dm.reference_samples(50)
    again = ShapesDataModule(num_train=300, num_test=100, num_val=20, seed=3).reference_samples(50)
    assert torch.equal(ref, again)
    other = ShapesDataModule(num_train=300, num_test=100, num_val=20, seed=4).reference_samples(50)
    assert not torch.equal(ref, other)


def test_render_shapes_draws_one_shape_per_image() -> None:
    images, labels = render_shapes(64, 16, torch.Generator().manual_seed(0))
    assert images.shape == (64, 3, 16, 16) and images.dtype == torch.uint8
    # the shape covers between ~2% and ~40% of the image; the corners are background
    spread = images.float().std(dim=1).reshape(64, -1)  # colour != grey background
    covered = (spread > 10).float().mean(-1)
    assert float(covered.min()) > 0.01 and float(covered.max()) < 0.45
    corner = images[:, :, 0, 0].float()
    assert float((corner.max(1).values - corner.min(1).values).max()) == 0.0  # grey
    assert labels.min() >= 0 and labels.max() <= 2


def test_shapes_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataModule(image_size=2)


def test_digits_upscaled() -> None:
    dm = DigitsDataModule(image_size=16)
    assert dm.data_shape == (1, 16, 16)
    x = dm.reference_samples(20)
    small = DigitsDataModule().reference_samples(20)
    assert x.shape == (20, 1, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    # the same held-out images: the 16x16 version pooled back to 8x8 is far closer to its own
    # 8x8 image than to the others
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    own = float((pooled - small).abs().mean())
    assert own < 0.2 and own < 0.5 * float((pooled - small.roll(1, 0)).abs().mean())
