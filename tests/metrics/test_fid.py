"""FID and KID with an injected feature extractor against hand-computed formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from diffkit.metrics.features import (
    FeatureWeightsError,
    RandomConvFeatures,
    build_feature_extractor,
)
from diffkit.metrics.fid import FID, KID


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 1.6 - 0.8 + shift).clamp(-1, 1)


def test_fid_equals_frechet_formula_on_the_same_features() -> None:
    net = RandomConvFeatures(in_channels=3, num_features=12, seed=7)
    fid = FID(feature=net)
    gen, ref = _images(64, 0, shift=0.2), _images(80, 1)
    fid.update(generated=gen[:30])
    fid.update(generated=gen[30:], reference=ref)
    out = fid.compute()
    with torch.no_grad():
        fg = net((gen + 1) / 2).double().numpy()
        fr = net((ref + 1) / 2).double().numpy()
    mg, mr = fg.mean(0), fr.mean(0)
    cg, cr = np.cov(fg, rowvar=False), np.cov(fr, rowvar=False)
    ref_fid = ((mg - mr) ** 2).sum() + np.trace(cg + cr - 2 * scipy.linalg.sqrtm(cg @ cr).real)
    assert abs(out["value"].item() - ref_fid) < 1e-6 * max(1.0, ref_fid), (out, ref_fid)
    assert out["n"].item() == 64 and out["n_reference"].item() == 80
    assert ref_fid > 1e-3  # the shift is visible to the random features


def test_kid_equals_hand_polynomial_mmd() -> None:
    net = RandomConvFeatures(in_channels=3, num_features=10, seed=3)
    kid = KID(feature=net, subsets=1, subset_size=50)
    gen, ref = _images(50, 2, shift=0.3), _images(50, 3)
    kid.update(gen, ref)
    out = kid.compute()
    with torch.no_grad():
        fg = net((gen + 1) / 2).double().numpy()
        fr = net((ref + 1) / 2).double().numpy()
    d, m = fg.shape[1], 50

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    kxx, kyy, kxy = k(fg, fg), k(fr, fr), k(fg, fr)
    ref_kid = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (
        m * (m - 1)
    ) - 2 * kxy.sum() / m**2
    assert abs(out["value"].item() - ref_kid) < 1e-9 * max(1.0, abs(ref_kid))
    assert out["n"].item() == 50 and out["subset_size"].item() == 50


def test_kid_subsets_are_seeded_and_shrink_to_available_samples() -> None:
    net = RandomConvFeatures(num_features=8)
    vals = []
    for _ in range(2):
        kid = KID(feature=net, subsets=5, subset_size=1000, seed=4)
        kid.update(_images(40, 5), _images(30, 6))
        vals.append(kid.compute())
    assert vals[0]["value"].item() == vals[1]["value"].item()
    assert vals[0]["subset_size"].item() == 30


def test_extractor_by_class_path_and_offline_error() -> None:
    named = build_feature_extractor(
        "diffkit.metrics.features.RandomConvFeatures", {"num_features": 5, "seed": 1}
    )
    direct = RandomConvFeatures(num_features=5, seed=1)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(named(x), direct(x))
    fid = FID(feature="diffkit.metrics.features:RandomConvFeatures", feature_args={"seed": 1})
    assert fid.inception.num_features == 64
    with pytest.raises(LookupError, match="class path"):
        build_feature_extractor("no_such_module.Net")
    with pytest.raises(FeatureWeightsError, match="weights"):
        build_feature_extractor("inception", {"weights": "/nonexistent/inception.pt"})


class _Probe(torch.nn.Module):
    """Stands in for a TorchScript FID Inception: reports what it was fed, padded to 2048."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        facts = torch.stack(
            [
                z.amin((1, 2, 3)),
                z.amax((1, 2, 3)),
                torch.full((n,), float(z.shape[1])),
                torch.full((n,), float(z.shape[2])),
                torch.full((n,), float(z.shape[3])),
            ],
            1,
        )
        return torch.cat([facts, torch.zeros(n, 2043)], 1)


def test_inception_features_from_a_torchscript_file(tmp_path) -> None:
    from diffkit.metrics.features import InceptionFeatures

    path = tmp_path / "inception.pt"
    torch.jit.script(_Probe()).save(str(path))
    net = InceptionFeatures(weights=str(path))
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 0, 0] = 1.0  # one white pixel per grey image
    f = net(x)
    assert f.shape == (2, 2048)
    lo, hi, c, h, w = f[0, :5].tolist()
    assert (c, h, w) == (3.0, 299.0, 299.0)  # grey repeated to RGB, resized to 299
    assert abs(lo + 1.0) < 1e-5 and abs(hi - 0.9921875) < 1e-5  # TF range: k / 128 - 1
    fid = FID(feature="inception", feature_args={"weights": str(path)})
    assert fid.inception.num_features == 2048
