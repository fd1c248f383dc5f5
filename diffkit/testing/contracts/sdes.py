"""Contract checks every :class:`~diffkit.sdes.base.LinearSDE` (built-in or plugin) must pass.

Each ``check_*`` function raises ``AssertionError`` with a readable message on failure and returns
the measured errors, so it can be used in any test framework. :class:`SDEContract` bundles them
as pytest tests: subclass it, set ``make_sde`` and ``data_shape``, and pytest collects the checks.
The checks use only the public interface (``drift_op``, ``diffusion_op``, ``transition``,
``kernel``, ...) and dense matrices of tiny shapes (e.g. data ``(3,)`` or images ``(1, 4, 4)``)
[docs/background/sdes.md#testing-kernels; Särkkä-Solin ch. 6]:

1. kernel mean and covariance against numerical integration (``scipy.integrate.solve_ivp``,
   DOP853, rtol 1e-12) of ``dA/dt = F A`` and the Lyapunov ODE
   ``dS/dt = F S + S F^T + G G^T``, both started at the kernel at ``t = 0``;
2. the transition semigroup ``Psi(t,s) Psi(s,r) = Psi(t,r)``, ``Psi(s,t) = Psi(t,s)^{-1}`` and
   Chapman-Kolmogorov (``conditional_cov(t, s)`` equals the Lyapunov solution from ``s``);
3. Monte Carlo: fine Euler-Maruyama simulation of the forward SDE; mean and covariance within
   4 standard errors plus the Euler-Maruyama bias, estimated from a coupled path with twice the
   step (weak order 1: ``bias(h) ~ |m(2h) - m(h)|``);
4. exact scores (:mod:`diffkit.sdes.exact`) against autograd of the exact log-density;
5. pickling, ``.to(dtype)`` keeping float64 coefficients, noise level monotone and inverted.

Example:
    >>> from diffkit.sdes.vp import VPSDE
    >>> errs = check_kernel_ode(VPSDE(), (3,), [1e-3, 0.5, 1.0])
"""

from __future__ import annotations

import copy
import io
import math
import pickle
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from diffkit.sdes.base import LinearSDE
from diffkit.sdes.exact import GaussianMixture
from diffkit.sdes.operators import LinearOp

__all__ = [
    "SDEContract",
    "check_dtype_policy",
    "check_exact_score",
    "check_kernel_ode",
    "check_monte_carlo",
    "check_noise_level",
    "check_pickle",
    "check_semigroup",
    "run_sde_contract",
]


_BASIS_CACHE: dict[tuple[object, tuple[int, ...]], np.ndarray] = {}


def _basis_matrix(basis, data_shape: tuple[int, ...]) -> np.ndarray:
    """Dense matrix of ``basis.forward`` on data of shape ``data_shape`` (cached)."""
    key = (basis, tuple(data_shape))
    if key not in _BASIS_CACHE:
        d = math.prod(data_shape)
        eye = torch.eye(d, dtype=torch.float64).reshape(d, *data_shape)
        _BASIS_CACHE[key] = basis.forward(eye).reshape(d, d).T.numpy()
    return _BASIS_CACHE[key]


def _dense(op, data_shape: tuple[int, ...]) -> np.ndarray:
    """Dense matrix of the first row of ``op`` (fast path for diagonal ops in a basis)."""
    if op.k == 1 and op.basis is not None:
        c = op.coef[0, ..., 0, 0]
        diag = torch.broadcast_to(c, tuple(data_shape)).reshape(-1).numpy()
        v = _basis_matrix(op.basis, data_shape)
        return v.T @ (diag[:, None] * v)
    return op.dense(tuple(data_shape))[0].numpy()


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300))


def _lyapunov(
    sde: LinearSDE,
    data_shape: tuple[int, ...],
    t0: float,
    times: Sequence[float],
    a0: np.ndarray,
    s0: np.ndarray,
    breakpoints: Sequence[float] = (),
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Integrate ``dA/dt = F A`` and ``dS/dt = F S + S F^T + G G^T`` from ``t0``."""
    from scipy.integrate import solve_ivp

    d = a0.shape[0]

    window = [-math.inf, math.inf]  # coefficients are read strictly inside a segment

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        t = min(max(t, window[0]), window[1])
        f = _dense(sde.drift_op(t), data_shape)
        g = _dense(sde.diffusion_op(t), data_shape)
        a, s = y[: d * d].reshape(d, d), y[d * d :].reshape(d, d)
        return np.concatenate([(f @ a).ravel(), (f @ s + s @ f.T + g @ g.T).ravel()])

    y = np.concatenate([a0.ravel(), s0.ravel()])
    out_a, out_s = [], []
    t_cur = t0
    for t_end in times:
        stops = sorted({b for b in breakpoints if t_cur < b < t_end} | {t_end})
        for stop in stops:
            if stop > t_cur:
                if breakpoints:  # one-sided limits at jumps of piecewise coefficients
                    pad = 1e-13 * (stop - t_cur)
                    window[:] = [t_cur + pad, stop - pad]
                sol = solve_ivp(rhs, (t_cur, stop), y, method="DOP853", rtol=1e-12, atol=1e-14)
                if not sol.success:
                    raise AssertionError(f"Lyapunov integration failed: {sol.message}")
                y, t_cur = sol.y[:, -1], stop
        out_a.append(y[: d * d].reshape(d, d).copy())
        out_s.append(y[d * d :].reshape(d, d).copy())
    return out_a, out_s


def check_kernel_ode(
    sde: LinearSDE,
    data_shape: tuple[int, ...],
    times: Sequence[float],
    *,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    breakpoints: Sequence[float] = (),
) -> dict[str, float]:
    """Kernel mean ``A_t`` and covariance ``S_t`` vs the mean and Lyapunov ODEs from ``t = 0``.

    Errors are relative to the max-norm of the reference; an entry passes when
    ``|err| <= rtol * max|ref| + atol`` (``atol`` covers references that decay to ~0, where the
    integrator's own absolute tolerance dominates). ``breakpoints``: times where the
    coefficients jump (the integrator restarts there), e.g. a discrete schedule's nodes.
    """
    k0 = sde.kernel(0.0)
    a0, s0 = _dense(k0.mean_op, data_shape), _dense(k0.cov, data_shape)
    times = sorted(float(t) for t in times)
    ref_a, ref_s = _lyapunov(sde, data_shape, 0.0, times, a0, s0, breakpoints)
    errs: dict[str, float] = {}
    for t, ra, rs in zip(times, ref_a, ref_s, strict=True):
        k = sde.kernel(t)
        ma, ms = _dense(k.mean_op, data_shape), _dense(k.cov, data_shape)
        ea, es = _rel_err(ma, ra), _rel_err(ms, rs)
        ok_a = np.abs(ma - ra).max() <= rtol * np.abs(ra).max() + atol
        ok_s = np.abs(ms - rs).max() <= rtol * np.abs(rs).max() + atol
        scale = _dense(k.scale, data_shape)
        ek = _rel_err(scale @ scale.T, ms)
        errs[f"mean@{t:g}"], errs[f"cov@{t:g}"], errs[f"scale@{t:g}"] = ea, es, ek
        if not (ok_a and ok_s and ek <= 1e-10):
            raise AssertionError(
                f"{type(sde).__name__} kernel at t={t:g} disagrees with the mean/Lyapunov ODE: "
                f"relative errors mean {ea:.2e}, cov {es:.2e} (allowed {rtol:.0e}); "
                f"scale scale^T vs cov {ek:.2e}"
            )
    return errs


def check_semigroup(
    sde: LinearSDE,
    data_shape: tuple[int, ...],
    t: float,
    s: float,
    r: float,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    breakpoints: Sequence[float] = (),
) -> dict[str, float]:
    """``Psi(t,s) Psi(s,r) = Psi(t,r)``, ``Psi(s,t) Psi(t,s) = I``, and Chapman-Kolmogorov:
    ``conditional_cov(t, r)`` equals the Lyapunov solution from ``Sigma(r) = 0`` and
    ``Psi(t,s) Sigma_{s|r} Psi(t,s)^T + Sigma_{t|s}``."""
    if not r < s < t:
        raise ValueError(f"check_semigroup needs r < s < t, got r={r}, s={s}, t={t}")
    psi = lambda a, b: _dense(sde.transition(a, b), data_shape)  # noqa: E731
    cc = lambda a, b: _dense(sde.conditional_cov(a, b), data_shape)  # noqa: E731
    eye = np.eye(psi(t, s).shape[0])
    d = eye.shape[0]
    ref_a, ref_s = _lyapunov(sde, data_shape, r, [s, t], eye, np.zeros((d, d)), breakpoints)
    pairs = {
        "compose": (psi(t, s) @ psi(s, r), psi(t, r)),
        "inverse": (psi(s, t) @ psi(t, s), eye),
        "psi_ode": (psi(t, r), ref_a[1]),
        "ck_ode": (cc(t, r), ref_s[1]),
        "ck": (psi(t, s) @ cc(s, r) @ psi(t, s).T + cc(t, s), cc(t, r)),
    }
    errs = {name: _rel_err(got, ref) for name, (got, ref) in pairs.items()}
    bad = [
        name
        for name, (got, ref) in pairs.items()
        if np.abs(got - ref).max() > rtol * np.abs(ref).max() + atol
    ]
    if bad:
        raise AssertionError(
            f"{type(sde).__name__} semigroup / Chapman-Kolmogorov fails {bad}; relative "
            f"errors {errs}"
        )
    return errs


def check_monte_carlo(
    sde: LinearSDE,
    u0: Tensor,
    t: float,
    *,
    paths: int = 20000,
    steps: int = 200,
    generator: torch.Generator | None = None,
    n_se: float = 4.0,
) -> dict[str, float]:
    """Euler-Maruyama from a fixed state ``u0`` ``(*state)`` to ``t``: sample mean and
    covariance vs the kernel, within ``n_se`` standard errors plus the EM bias (estimated from a
    coupled coarse path with step ``2h``). The initial state is drawn from the kernel at 0
    (a point mass unless the SDE's kernel starts with noise, e.g. CLD-HSM or blurring)."""
    if steps % 2:
        raise ValueError(f"check_monte_carlo.steps must be even, got {steps}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    u0 = u0.to(torch.float64)
    data_shape = tuple(u0.shape) if sde.block == 1 else tuple(u0.shape[1:])
    k0 = sde.kernel(0.0)
    # symmetric square root of the (possibly singular) initial covariance
    evals, evecs = torch.linalg.eigh(torch.as_tensor(_dense(k0.cov, data_shape)))
    root0 = evecs * evals.clamp_min(0.0).sqrt()
    z = torch.randn((paths, root0.shape[0]), generator=gen, dtype=torch.float64)
    noise0 = (z @ root0.T).reshape(paths, *u0.shape)
    fine = k0.mean_op.apply(u0.expand(paths, *u0.shape)) + noise0
    # Simulate in the operators' orthonormal basis (white noise stays white there).
    basis = sde.drift_op(0.0).basis or sde.diffusion_op(0.0).basis
    if basis is not None:
        fine = basis.forward(fine)

    def drift(s: float) -> LinearOp:
        return LinearOp(sde.drift_op(s).coef)  # coefficients in the basis

    def diffusion(s: float) -> LinearOp:
        return LinearOp(sde.diffusion_op(s).coef)

    coarse = fine.clone()
    h = t / steps
    dw_acc = torch.zeros_like(fine)
    for i in range(steps):
        ti = i * h
        dw = torch.randn(fine.shape, generator=gen, dtype=torch.float64) * math.sqrt(h)
        fine = fine + h * drift(ti).apply(fine) + diffusion(ti).apply(dw)
        dw_acc = dw_acc + dw
        if i % 2 == 1:
            tc = (i - 1) * h
            coarse = coarse + 2 * h * drift(tc).apply(coarse) + diffusion(tc).apply(dw_acc)
            dw_acc = torch.zeros_like(fine)
    if basis is not None:
        fine, coarse = basis.inverse(fine), basis.inverse(coarse)
    k = sde.kernel(t)
    mean = k.mean_op.apply(u0[None])[0].reshape(-1)
    cov = torch.as_tensor(_dense(k.cov, data_shape))
    xf, xc = fine.reshape(paths, -1), coarse.reshape(paths, -1)
    m_f, m_c = xf.mean(0), xc.mean(0)
    c_f = torch.cov(xf.T).reshape(cov.shape)
    c_c = torch.cov(xc.T).reshape(cov.shape)
    var = cov.diagonal()
    se_mean = (var / paths).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / paths).sqrt()
    tol_mean = n_se * se_mean + (m_c - m_f).abs()
    tol_cov = n_se * se_cov + (c_c - c_f).abs()
    bad_mean = ((m_f - mean).abs() > tol_mean).sum().item()
    bad_cov = ((c_f - cov).abs() > tol_cov).sum().item()
    errs = {
        "mean_max_se": float(((m_f - mean).abs() / se_mean.clamp_min(1e-300)).max()),
        "cov_max_abs": float((c_f - cov).abs().max()),
        "em_bias_cov": float((c_c - c_f).abs().max()),
    }
    if bad_mean or bad_cov:
        raise AssertionError(
            f"{type(sde).__name__} Monte Carlo at t={t:g}: {bad_mean} mean and {bad_cov} "
            f"covariance entries outside {n_se} standard errors + EM bias; {errs}"
        )
    return errs


def check_exact_score(
    sde: LinearSDE,
    dist: GaussianMixture,
    times: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    rtol: float = 1e-6,
) -> float:
    """The exact mixture score equals autograd of the exact marginal log-density (float64)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    t = torch.as_tensor(list(times), dtype=torch.float64)
    shape = sde.state_shape(dist.data_shape)
    u = torch.randn((t.numel(), *shape), generator=gen, dtype=torch.float64)
    # draw around the marginal: lift data samples and perturb them
    x0 = dist.sample(t.numel(), generator=gen)
    u = sde.perturb(sde.lift(x0, generator=gen), t, generator=gen)[0] + 0.1 * u
    u.requires_grad_(True)
    (grad,) = torch.autograd.grad(dist.marginal_log_prob(u, t, sde).sum(), u)
    score = dist.score(u.detach(), t, sde)
    err = float(((score - grad).abs() / (grad.abs() + 1.0)).max())
    if not err <= rtol:
        raise AssertionError(
            f"{type(sde).__name__}: exact score differs from autograd of log p_t by {err:.2e}"
        )
    return err


def check_pickle(sde: LinearSDE, t: float) -> None:
    """Pickle round trip (ddp_spawn), deepcopy and ``.to(float32)`` leave the kernel unchanged
    and keep every float64 buffer float64."""
    ref = sde.kernel(t)
    buf = io.BytesIO()
    pickle.dump(sde, buf)
    buf.seek(0)
    for other in (pickle.load(buf), copy.deepcopy(sde), copy.deepcopy(sde).to(torch.float32)):
        for name, b in other.named_buffers():
            if b.is_floating_point() and b.dtype != torch.float64:
                raise AssertionError(f"{type(sde).__name__}: buffer {name} became {b.dtype}")
        k = other.kernel(t)
        for a, b in ((ref.mean_op, k.mean_op), (ref.cov, k.cov), (ref.scale, k.scale)):
            if a.coef.dtype != torch.float64 or not torch.equal(a.coef, b.coef):
                raise AssertionError(f"{type(sde).__name__}: kernel changed after a round trip")


def check_dtype_policy(sde: LinearSDE, data_shape: tuple[int, ...], t: float) -> None:
    """Operators are float64 for float32 times; ``perturb`` keeps the state's dtype."""
    t32 = torch.tensor([t], dtype=torch.float32)
    ops = [sde.drift_op(t32), sde.diffusion_op(t32), sde.transition(t32, t32 / 2)]
    k = sde.kernel(t32)
    ops += [k.mean_op, k.cov, k.scale]
    for op in ops:
        if op.coef.dtype != torch.float64:
            raise AssertionError(f"{type(sde).__name__}: operator coefficients in {op.coef.dtype}")
    x = torch.zeros((2, *data_shape), dtype=torch.float32)
    u0 = sde.lift(x, generator=torch.Generator().manual_seed(0))
    ut, _ = sde.perturb(u0, t32.expand(2), generator=torch.Generator().manual_seed(0))
    if ut.dtype != torch.float32 or tuple(ut.shape) != (2, *sde.state_shape(data_shape)):
        raise AssertionError(f"{type(sde).__name__}.perturb returned {ut.dtype} {ut.shape}")
    if sde.project(ut).shape != x.shape:
        raise AssertionError(f"{type(sde).__name__}.project does not return data of shape")


def check_noise_level(sde: LinearSDE, *, rtol: float = 1e-9) -> float:
    """``noise_level`` strictly increasing on ``[t_min, T]`` and inverted by
    ``t_from_noise_level``; ``log_snr`` consistent with it."""
    t = torch.linspace(max(sde.t_min, 1e-6 * sde.T), sde.T, 50, dtype=torch.float64)
    rho = sde.noise_level(t)
    if not bool((rho.diff() > 0).all()):
        raise AssertionError(f"{type(sde).__name__}.noise_level is not strictly increasing")
    err = float((sde.t_from_noise_level(rho) - t).abs().max() / sde.T)
    if err > rtol:
        raise AssertionError(f"{type(sde).__name__}.t_from_noise_level error {err:.2e}")
    if not torch.allclose(sde.log_snr(t), -2 * rho.log(), rtol=1e-12):
        raise AssertionError(f"{type(sde).__name__}.log_snr != -2 log noise_level")
    return err


def run_sde_contract(
    sde: LinearSDE,
    data_shape: tuple[int, ...],
    *,
    times: Sequence[float] | None = None,
    mc_time: float | None = None,
    mc_paths: int = 20000,
    mc_steps: int = 200,
    breakpoints: Sequence[float] = (),
) -> dict[str, object]:
    """Run every check on ``sde`` with data of (tiny) shape ``data_shape``; returns the errors."""
    T = sde.T
    times = list(times) if times is not None else [1e-3 * T, 0.1 * T, 0.5 * T, T]
    out: dict[str, object] = {}
    out["kernel_ode"] = check_kernel_ode(sde, data_shape, times, breakpoints=breakpoints)
    out["semigroup"] = check_semigroup(
        sde, data_shape, 0.9 * T, 0.5 * T, 0.2 * T, breakpoints=breakpoints
    )
    g = torch.Generator().manual_seed(0)
    u0 = sde.lift(torch.randn((1, *data_shape), generator=g, dtype=torch.float64), generator=g)
    out["monte_carlo"] = check_monte_carlo(
        sde, u0[0], mc_time if mc_time is not None else 0.5 * T, paths=mc_paths, steps=mc_steps
    )
    k = 3
    dist = GaussianMixture(
        torch.tensor([0.2, 0.3, 0.5]),
        torch.randn((k, *data_shape), generator=g, dtype=torch.float64),
        0.05 + torch.rand((k,), generator=g, dtype=torch.float64),
    )
    out["exact_score"] = check_exact_score(sde, dist, [0.05 * T, 0.3 * T, T])
    check_pickle(sde, 0.5 * T)
    check_dtype_policy(sde, data_shape, 0.5 * T)
    out["noise_level"] = check_noise_level(sde)
    return out


class SDEContract:
    """Base class of pytest contract tests for a linear SDE.

    Subclass it as ``class TestMySDE(SDEContract)`` and set ``make_sde`` (a zero-argument
    factory) and ``data_shape`` (tiny, e.g. ``(3,)`` or ``(1, 4, 4)``).
    """

    make_sde: ClassVar[Callable[[], LinearSDE]]
    data_shape: ClassVar[tuple[int, ...]] = (3,)
    breakpoints: ClassVar[tuple[float, ...]] = ()
    mc_paths: ClassVar[int] = 20000
    mc_steps: ClassVar[int] = 200

    def _sde(self) -> LinearSDE:
        return type(self).make_sde()

    def test_kernel_matches_lyapunov_ode(self) -> None:
        sde = self._sde()
        T = sde.T
        check_kernel_ode(sde, self.data_shape, [1e-3 * T, 0.5 * T, T], breakpoints=self.breakpoints)

    def test_semigroup_and_chapman_kolmogorov(self) -> None:
        sde = self._sde()
        T = sde.T
        check_semigroup(
            sde, self.data_shape, 0.9 * T, 0.5 * T, 0.2 * T, breakpoints=self.breakpoints
        )

    def test_monte_carlo_moments(self) -> None:
        sde = self._sde()
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn((1, *self.data_shape), generator=g, dtype=torch.float64)
        u0 = sde.lift(x0, generator=g)[0]
        check_monte_carlo(sde, u0, 0.5 * sde.T, paths=self.mc_paths, steps=self.mc_steps)

    def test_exact_score_is_gradient(self) -> None:
        sde = self._sde()
        g = torch.Generator().manual_seed(1)
        dist = GaussianMixture(
            torch.tensor([0.5, 0.5]),
            torch.randn((2, *self.data_shape), generator=g, dtype=torch.float64),
            torch.tensor([0.1, 0.4], dtype=torch.float64),
        )
        check_exact_score(sde, dist, [0.05 * sde.T, 0.5 * sde.T, sde.T])

    def test_pickle_and_dtype_policy(self) -> None:
        sde = self._sde()
        check_pickle(sde, 0.5 * sde.T)
        check_dtype_policy(sde, self.data_shape, 0.5 * sde.T)

    def test_noise_level(self) -> None:
        check_noise_level(self._sde())
