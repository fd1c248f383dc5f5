"""Sample metrics (torchmetrics, DDP-aware, reporting ``n``): W2, Sinkhorn, Gaussian W2, MMD,
FID, KID, and the PF-ODE likelihood in bits per dimension."""

from diffkit.metrics.base import SampleMetric
from diffkit.metrics.fid import FID, KID
from diffkit.metrics.gaussian_w2 import GaussianW2, gaussian_w2
from diffkit.metrics.mmd import MMD
from diffkit.metrics.nll import NLL, pf_ode_log_likelihood
from diffkit.metrics.wasserstein import W2, Sinkhorn

__all__ = [
    "FID",
    "KID",
    "MMD",
    "NLL",
    "W2",
    "GaussianW2",
    "SampleMetric",
    "Sinkhorn",
    "gaussian_w2",
    "pf_ode_log_likelihood",
]
