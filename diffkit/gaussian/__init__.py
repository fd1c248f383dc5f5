"""Exact Gaussian data: the closed-form score of ``N(mean, C)`` (and the score model of
Gaussian-mixture data, :class:`ExactScoreModel`) under any linear SDE, exact
covariance propagation of a sampler's output law, its W2 and KL to the data, and the covariance
spectra used as Gaussian stand-ins for image data (CIFAR-10, GRF32).

With Gaussian data every sampler that is linear in the state maps the start law to a Gaussian
output law, computed here exactly by running the real sampler code on a few deterministic rows
per eigendirection (no Monte Carlo); see :mod:`diffkit.gaussian.propagation`.
"""

from diffkit.gaussian.propagation import Modes, kl_to_data, mode_cov, propagate, w2_to_data
from diffkit.gaussian.score import ExactScoreModel, GaussianScore, data_cov
from diffkit.gaussian.spectra import SPECTRA, cifar10_spectrum, grf32_spectrum, load_spectrum

__all__ = [
    "SPECTRA",
    "ExactScoreModel",
    "GaussianScore",
    "Modes",
    "cifar10_spectrum",
    "data_cov",
    "grf32_spectrum",
    "kl_to_data",
    "load_spectrum",
    "mode_cov",
    "propagate",
    "w2_to_data",
]
