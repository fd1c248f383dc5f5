"""The exact Gaussian module: the shipped spectra, and the score/denoiser against the mixture
code of :mod:`diffkit.sdes.exact` (an independent implementation) on VP, blurring and CLD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.gaussian import GaussianScore, cifar10_spectrum, data_cov, grf32_spectrum
from diffkit.gaussian.spectra import compress, load_spectrum
from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.exact import Gaussian
from diffkit.sdes.operators import DCTBasis
from diffkit.sdes.vp import VPSDE


def test_cifar10_spectrum_ships_with_the_package() -> None:
    lam = cifar10_spectrum()
    assert lam.shape == (3072,) and lam.dtype == torch.float64
    assert abs(float(lam.sum()) - 761.6) < 0.05  # trace published with the file
    assert bool((lam > 0).all())


def test_grf32_spectrum_closed_form_checks() -> None:
    lam = grf32_spectrum()
    assert lam.shape == (3, 32, 32)
    assert abs(float(lam.sum()) - 840.1) < 0.05
    assert float(lam.max()) == 100.0 and abs(float(lam.min()) - 1.19e-3) < 5e-6
    uniq, counts = compress(lam)
    assert float((uniq * counts).sum()) == pytest.approx(float(lam.sum()), rel=1e-12)
    assert int(counts.sum()) == 3072 and uniq.numel() < 3072 // 5


def test_load_spectrum_names_files_and_errors(tmp_path) -> None:
    assert load_spectrum("cifar10").shape == (3072,)
    assert load_spectrum("grf32").shape == (3, 32, 32)
    path = tmp_path / "spec.npy"
    np.save(path, np.array([[1.0, 0.5], [0.25, 0.0]], dtype=np.float32))
    assert load_spectrum(path).tolist() == [[1.0, 0.5], [0.25, 0.0]]
    with pytest.raises(ValueError, match="neither a built-in"):
        load_spectrum(tmp_path / "missing.npy")
    np.save(path, np.array([1.0, -0.5]))
    with pytest.raises(ValueError, match=">= 0"):
        load_spectrum(path)


@pytest.mark.parametrize("kind", ["vp", "blur", "cld"])
def test_score_and_denoiser_match_the_mixture_code(kind: str) -> None:
    shape = (1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    lam = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1
    if kind == "vp":
        sde, dist = VPSDE(), Gaussian(torch.zeros(shape), lam)
    elif kind == "blur":
        sde = BlurSDE(image_size=(4, 4))
        dist = Gaussian(torch.zeros(shape), lam, basis=DCTBasis(4, 4))
    else:
        sde, dist = CLDSDE(), Gaussian(torch.zeros(shape), lam)
    exact = GaussianScore(sde, data_cov(sde, lam))
    t = torch.full((3,), 0.3, dtype=torch.float64)
    u = torch.randn(3, *sde.state_shape(shape), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(exact.score(u, t), dist.score(u, t, sde))
    torch.testing.assert_close(exact.denoise(u, t), dist.denoise(u, t, sde))
    torch.testing.assert_close(exact(u, t).raw, dist.score(u, t, sde))
