"""Contract checks for every part kind, importable by plugin authors.

Each ``check_*`` function raises ``AssertionError`` with a readable message and returns what it
measured; each ``*Contract`` class bundles the checks of one kind as pytest tests (subclass it
and set its factory). The built-in parts run through the same checks
(``tests/contracts/test_every_registered_part.py``).

* :mod:`~diffkit.testing.contracts.sdes`: kernels against the Lyapunov ODE, semigroup, Monte
  Carlo, exact scores, pickling, dtype policy, noise levels.
* :mod:`~diffkit.testing.contracts.samplers`: exactness and convergence order on Gaussian data,
  NFE honesty, determinism under a generator.
* :mod:`~diffkit.testing.contracts.denoisers`: shapes, dtype, conditioning, gradient flow.
* :mod:`~diffkit.testing.contracts.losses`: per-sample shape, finiteness, generator
  determinism, gradient flow and the minimiser (the exact score has the lowest loss).
"""

from diffkit.testing.contracts.denoisers import DenoiserContract, check_denoiser
from diffkit.testing.contracts.losses import LossContract, check_loss
from diffkit.testing.contracts.samplers import (
    SamplerContract,
    check_sampler_convergence,
    check_sampler_determinism,
    check_sampler_nfe,
    gaussian_sampler_error,
)
from diffkit.testing.contracts.sdes import (
    SDEContract,
    check_dtype_policy,
    check_exact_score,
    check_kernel_ode,
    check_monte_carlo,
    check_noise_level,
    check_pickle,
    check_semigroup,
    run_sde_contract,
)

__all__ = [
    "DenoiserContract",
    "LossContract",
    "SDEContract",
    "SamplerContract",
    "check_denoiser",
    "check_dtype_policy",
    "check_exact_score",
    "check_kernel_ode",
    "check_loss",
    "check_monte_carlo",
    "check_noise_level",
    "check_pickle",
    "check_sampler_convergence",
    "check_sampler_determinism",
    "check_sampler_nfe",
    "check_semigroup",
    "gaussian_sampler_error",
    "run_sde_contract",
]
