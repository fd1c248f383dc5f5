"""Contract checks every :class:`~diffkit.samplers.base.Sampler` (built-in or plugin) must pass.

The checks drive only :meth:`Sampler.sample` and :meth:`Sampler.expected_nfe`, with the exact
score of Gaussian data ``N(0, diag lam)`` (:class:`~diffkit.sdes.exact.ExactScoreModel`) under
a scalar SDE (default :class:`~diffkit.sdes.vp.VPSDE`):

1. **exactness**: with the exact score every sampler step is linear in the start state and in
   the noise draws, so the output covariance is computed *exactly* through the real loop (batch
   row 0 carries ``sqrt(C_T)`` and no noise, row ``k`` only the ``k``-th noise draw, fed through
   ``Sampler.noise_source``) and compared with the true marginal ``C_s = alpha_s^2 lam +
   sigma_s^2`` at the sampler's last time [docs/background/samplers.md#exactness];
2. **convergence order**: that error falls like ``steps^-order`` (slope of log error vs
   log steps);
3. **NFE honesty**: the model calls counted from outside equal ``SampleResult.nfe`` and
   :meth:`Sampler.expected_nfe`;
4. **determinism**: equal generators give equal samples, the global RNG is never touched, and a
   stochastic sampler's draws depend on the generator.

A sampler must draw its noise through :meth:`Sampler.noise` (which honours ``noise_source``).
Each ``check_*`` raises ``AssertionError`` with a readable message; :class:`SamplerContract`
bundles them as pytest tests.

Example:
    >>> from diffkit.samplers.ddim import DDIM
    >>> errs = check_sampler_convergence(DDIM, order=1)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from diffkit.prediction import Prediction, ScoreModel
from diffkit.samplers.base import Sampler
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.exact import ExactScoreModel, Gaussian

__all__ = [
    "SamplerContract",
    "check_sampler_convergence",
    "check_sampler_determinism",
    "check_sampler_nfe",
    "gaussian_sampler_error",
]

#: Default data variances ``lam`` (one per coordinate): a spread of scales around 1.
LAM = (0.05, 0.5, 2.0)


def _default_sde() -> LinearSDE:
    from diffkit.sdes.vp import VPSDE

    return VPSDE()


def _exact_model(sde: LinearSDE, lam: Sequence[float]) -> ExactScoreModel:
    lam_t = torch.tensor(lam, dtype=torch.float64)
    return ExactScoreModel(Gaussian(torch.zeros_like(lam_t), lam_t), sde)


def _marginal_var(sde: LinearSDE, lam: Sequence[float], t: Tensor) -> Tensor:
    """``alpha_t^2 lam + sigma_t^2`` per coordinate, ``(len(lam),)``, for one time ``t``."""
    k = sde.point_kernel(t.reshape(1))
    if not k.is_scalar:
        raise ValueError(f"the sampler contract needs a scalar SDE, got {type(sde).__name__}")
    alpha, sigma = k.alpha_sigma()
    return alpha**2 * torch.tensor(lam, dtype=torch.float64) + sigma**2


class _Counted:
    """A score model that counts its calls (from outside the sampler)."""

    def __init__(self, model: ScoreModel) -> None:
        self.model, self.calls = model, 0

    def __call__(self, u: Tensor, t: Tensor) -> Prediction:
        self.calls += 1
        return self.model(u, t)


def gaussian_sampler_error(
    sampler: Sampler, sde: LinearSDE | None = None, lam: Sequence[float] = LAM
) -> float:
    """Max relative error of the exact output variance of ``sampler`` started at ``p_T``.

    The output variance is propagated exactly through the real loop (see the module docstring),
    so the error is the sampler's discretisation error alone, with no Monte Carlo noise.
    """
    sde = sde if sde is not None else _default_sde()
    model = _exact_model(sde, lam)
    d = len(lam)
    draws = [0]

    def count(u: Tensor) -> Tensor:
        draws[0] += 1
        return torch.zeros_like(u)

    sampler.noise_source = count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny tensor ops: extra threads only spin
    try:
        probe = sampler.sample(model, sde, (1, d), u_T=torch.zeros(1, d, dtype=torch.float64))
        n = draws[0]
        start = probe.times[0]
        u_T = torch.zeros(n + 1, d, dtype=torch.float64)
        u_T[0] = _marginal_var(sde, lam, start).sqrt()
        calls = [0]

        def unit_rows(u: Tensor) -> Tensor:
            calls[0] += 1
            z = torch.zeros_like(u)
            z[calls[0]] = 1.0
            return z

        sampler.noise_source = unit_rows
        res = sampler.sample(model, sde, (n + 1, d), u_T=u_T, dtype=torch.float64)
    finally:
        sampler.noise_source = None
        torch.set_num_threads(threads)
    var = res.u.reshape(n + 1, d).pow(2).sum(0)
    target = _marginal_var(sde, lam, res.times[-1])
    err = float(((var - target).abs() / target).max())
    if not np.isfinite(err):
        raise AssertionError(f"{type(sampler).__name__}: non-finite output variance {var}")
    return err


def check_sampler_convergence(
    make_sampler: Callable[[int], Sampler],
    order: float,
    *,
    sde: LinearSDE | None = None,
    steps: Sequence[int] = (40, 80, 160),
    slack: float = 0.5,
    lam: Sequence[float] = LAM,
) -> list[float]:
    """The Gaussian error of ``make_sampler(n)`` falls with ``n`` at slope ``order`` (within
    ``[order - slack, order + slack + 0.1]`` on the last doubling); returns the errors."""
    name = type(make_sampler(steps[0])).__name__
    errs = [gaussian_sampler_error(make_sampler(n), sde, lam) for n in steps]
    if not all(b < a for a, b in itertools.pairwise(errs)):
        raise AssertionError(
            f"{name}: the Gaussian error does not fall with the steps {list(steps)}: {errs} "
            "(does the sampler draw its noise through Sampler.noise?)"
        )
    slope = float(np.log(errs[-2] / errs[-1]) / np.log(steps[-1] / steps[-2]))
    if not order - slack < slope < order + slack + 0.1:
        raise AssertionError(
            f"{name}: convergence slope {slope:.2f} on steps {list(steps[-2:])}, expected "
            f"{order} (errors {errs})"
        )
    return errs


def check_sampler_nfe(
    sampler: Sampler, sde: LinearSDE | None = None, lam: Sequence[float] = LAM
) -> int:
    """Model calls seen from outside == ``SampleResult.nfe`` == ``expected_nfe(sde)``."""
    sde = sde if sde is not None else _default_sde()
    model = _Counted(_exact_model(sde, lam))
    gen = torch.Generator().manual_seed(0)
    res = sampler.sample(model, sde, (2, len(lam)), generator=gen, dtype=torch.float64)
    expected = sampler.expected_nfe(sde)
    if not model.calls == res.nfe == expected:
        raise AssertionError(
            f"{type(sampler).__name__}: the model was called {model.calls} times, "
            f"SampleResult.nfe = {res.nfe}, expected_nfe = {expected}"
        )
    if not torch.isfinite(res.x).all():
        raise AssertionError(f"{type(sampler).__name__}: non-finite samples")
    return res.nfe


def check_sampler_determinism(
    sampler: Sampler, sde: LinearSDE | None = None, lam: Sequence[float] = LAM
) -> None:
    """Equal generators give equal samples; the global RNG is left alone; if the sampler draws
    noise, another seed gives other samples."""
    sde = sde if sde is not None else _default_sde()
    model = _exact_model(sde, lam)
    name = type(sampler).__name__
    shape = (4, len(lam))

    def run(seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sampler.sample(model, sde, shape, generator=gen, dtype=torch.float64).x

    before = torch.get_rng_state()
    a, b = run(1), run(1)
    if not torch.equal(torch.get_rng_state(), before):
        raise AssertionError(f"{name} used the global RNG: draw from the generator argument")
    if not torch.equal(a, b):
        raise AssertionError(f"{name}: two runs with equal generators differ")
    u_T = torch.ones(shape, dtype=torch.float64)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    outs = [sampler.sample(model, sde, shape, generator=g, u_T=u_T).x for g in gens]
    draws = [0]

    def count(u: Tensor) -> Tensor:
        draws[0] += 1
        return torch.zeros_like(u)

    sampler.noise_source = count
    try:
        sampler.sample(model, sde, shape, u_T=u_T, dtype=torch.float64)
    finally:
        sampler.noise_source = None
    if draws[0] > 0 and torch.equal(outs[0], outs[1]):
        raise AssertionError(f"{name} draws noise but ignores the generator")
    if draws[0] == 0 and not torch.equal(outs[0], outs[1]):
        raise AssertionError(
            f"{name} is random without drawing through Sampler.noise (noise_source unused)"
        )


class SamplerContract:
    """Base class of pytest contract tests for a sampler.

    Subclass it as ``class TestMySampler(SamplerContract)`` and set ``make_sampler`` (a factory
    ``steps -> Sampler``) and ``order`` (the convergence order on Gaussian data: 1 for
    Euler-type and stochastic first-order samplers, 2 for Heun, ...); optionally ``make_sde``
    (a scalar SDE) and ``steps``.
    """

    make_sampler: ClassVar[Callable[[int], Sampler]]
    order: ClassVar[float]
    make_sde: ClassVar[Callable[[], LinearSDE]] = staticmethod(_default_sde)
    steps: ClassVar[tuple[int, ...]] = (40, 80, 160)

    def _make(self, steps: int) -> Sampler:
        return type(self).make_sampler(steps)

    def test_exact_on_gaussian_data_at_its_order(self) -> None:
        check_sampler_convergence(self._make, self.order, sde=self.make_sde(), steps=self.steps)

    def test_nfe_is_honest(self) -> None:
        check_sampler_nfe(self._make(5), self.make_sde())

    def test_deterministic_under_a_generator(self) -> None:
        check_sampler_determinism(self._make(5), self.make_sde())
