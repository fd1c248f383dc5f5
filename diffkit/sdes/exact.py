"""Exact scores and denoisers of Gaussian, Dirac and Gaussian-mixture data under any linear SDE.

For data ``p_0 = sum_k pi_k N(mu_k, C_k)`` and a linear SDE with kernel
``u_t | u_0 ~ N(A_t u_0, S_t)`` (``A_t = Psi(t, 0)``, ``S_t = Sigma_t``) the marginal is again a
mixture [Shah+23, 2307.01178; Zach+23, 2302.08411; gDDIM, 2206.05564 (thesis eq. 7.15);
docs/background/sdes.md#exact-scores]::

    p_t = sum_k pi_k N(A_t mu_k, C_kt),          C_kt = A_t C_k A_t^T + S_t
    w_k(u) = softmax_k(log pi_k + log N(u; A_t mu_k, C_kt))
    grad log p_t(u) = -sum_k w_k C_kt^{-1} (u - A_t mu_k)
    E[u_0 | u_t = u] = sum_k w_k [mu_k + C_k A_t^T C_kt^{-1} (u - A_t mu_k)]

Everything is computed in float64 with the structured operators of
:mod:`diffkit.sdes.operators` (no dense ``D x D`` matrix), log-sum-exp weights, and is
vectorised over the batch and the components (the batch and component axes are flattened into
the operators' leading axis).

Supported component covariances (``covs`` of :class:`GaussianMixture`):

* ``(K,)``: isotropic variances ``C_k = s_k I`` (any SDE);
* ``(K, *S)``: diagonal variances, diagonal in ``basis`` (``None``: the data/pixel basis; a
  :class:`~diffkit.sdes.operators.DCTBasis` for covariances diagonal in the DCT basis). A
  diagonal covariance must be diagonal in the same basis as the SDE's non-scalar operators:
  pixel-diagonal data under the blurring SDE (DCT-diagonal operators) is rejected, because the
  marginal covariance is then diagonal in neither basis;
* zeros: Dirac components (the marginal is defined for ``t > 0`` only).

Protocol for SDEs on an augmented state (``block = 2``, CLD): the data law is lifted to
``p_0(x) N(v; 0, velocity_variance I)``: component means ``(mu_k, 0)`` and covariances
``diag(C_k, velocity_variance)`` [CLD, 2112.07068]. Such an SDE must expose the float attribute
``velocity_variance`` and, if its training :meth:`kernel` is not conditioned on the full initial
state (CLD's hybrid score matching kernel), a method ``point_kernel(t)`` giving the kernel from a
point mass in the full state. For ``block = 1`` SDEs ``kernel(t)`` is used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffkit.prediction import Prediction, Target
from diffkit.sdes.base import GaussianKernel, LinearSDE, as_time
from diffkit.sdes.operators import Basis, LinearOp

__all__ = ["Dirac", "ExactScoreModel", "Gaussian", "GaussianMixture", "point_kernel"]

_LOG_2PI = math.log(2.0 * math.pi)


def point_kernel(sde: LinearSDE, t: Tensor | float) -> GaussianKernel:
    """The kernel ``u_t | u_0`` from a point mass in the full state (``sde.point_kernel``)."""
    return sde.point_kernel(t)


def _rows(op: LinearOp, b: int, k: int, *, outer: bool) -> LinearOp:
    """Spread an operator with leading size 1/``b`` (``outer``) or 1/``k`` over ``b * k`` rows
    ordered batch-major (row ``i * k + j`` is batch ``i``, component ``j``)."""
    c = op.coef
    if outer:
        c = c.expand(b, *c.shape[1:]) if c.shape[0] == 1 else c
        c = c.repeat_interleave(k, dim=0)
    else:
        c = c.expand(k, *c.shape[1:]) if c.shape[0] == 1 else c
        c = c.repeat(b, *([1] * (c.dim() - 1)))
    return LinearOp(c, op.basis)


class GaussianMixture:
    """A mixture of Gaussians with isotropic or diagonal components, in float64.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, *S)`` component means, in the data (pixel) basis.
        covs: ``(K,)`` isotropic variances or ``(K, *S)`` diagonal variances (in ``basis``);
            zeros give Dirac components.
        basis: basis in which diagonal ``covs`` are diagonal (``None``: data basis).

    Example:
        >>> means = torch.tensor([[-1.0], [1.0]])
        >>> gm = GaussianMixture(torch.ones(2), means, torch.full((2,), 0.1))
        >>> gm.sample(4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1])
    """

    def __init__(
        self, weights: Tensor, means: Tensor, covs: Tensor, *, basis: Basis | None = None
    ) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if weights.dim() != 1 or weights.numel() < 1:
            raise ValueError(f"GaussianMixture.weights must be (K,), got {tuple(weights.shape)}")
        k = weights.numel()
        if not bool((weights > 0).all()) or not bool(torch.isfinite(weights).all()):
            raise ValueError("GaussianMixture.weights must be positive and finite")
        if means.dim() < 2 or means.shape[0] != k:
            raise ValueError(
                f"GaussianMixture.means must be (K, *S) with K = {k}, got {tuple(means.shape)}"
            )
        if covs.shape not in ((k,), means.shape):
            raise ValueError(
                f"GaussianMixture.covs must be (K,) = ({k},) isotropic variances or (K, *S) = "
                f"{tuple(means.shape)} diagonal variances, got {tuple(covs.shape)}"
            )
        if not bool((covs >= 0).all()):
            raise ValueError("GaussianMixture.covs are variances and must be >= 0")
        if basis is not None and covs.dim() > 1:
            shape = (getattr(basis, "height", None), getattr(basis, "width", None))
            if None not in shape and tuple(means.shape[-2:]) != shape:
                raise ValueError(
                    f"GaussianMixture.basis {basis!r} does not match the data shape "
                    f"{tuple(means.shape[1:])}"
                )
        self.weights = weights / weights.sum()
        self.means = means
        self.covs = covs
        self.basis = basis if covs.dim() > 1 else None

    # ----------------------------------------------------------------- basic properties
    @property
    def num_components(self) -> int:
        return self.weights.numel()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    @property
    def isotropic(self) -> bool:
        return self.covs.dim() == 1

    def component_cov(self) -> LinearOp:
        """Component covariances as an operator with ``K`` rows."""
        if self.isotropic:
            return LinearOp.scalar(self.covs)
        return LinearOp.diagonal(self.covs, basis=self.basis)

    def mean(self) -> Tensor:
        """Mixture mean ``(*S)``."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def to(self, device: torch.device | str) -> GaussianMixture:
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.weights, out.means, out.covs = (
            self.weights.to(device),
            self.means.to(device),
            self.covs.to(device),
        )
        return out

    # ----------------------------------------------------------------- data law
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """``n`` draws ``(n, *S)``."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(
            (n, *self.data_shape), generator=generator, dtype=torch.float64,
            device=self.means.device,
        )  # fmt: skip
        if self.isotropic:
            noise = self.covs[idx].sqrt().reshape(-1, *([1] * len(self.data_shape))) * z
        else:
            noise = LinearOp.diagonal(self.covs[idx].sqrt(), basis=self.basis).apply(z)
        return (self.means[idx] + noise).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Data log-density ``(B,)`` (all components must be non-degenerate)."""
        if not bool((self.covs > 0).all()):
            raise ValueError("log_prob of a mixture with Dirac (zero-variance) components")
        x = x.to(torch.float64)
        b, k = x.shape[0], self.num_components
        cov = _rows(self.component_cov(), b, k, outer=False)
        diff = x.repeat_interleave(k, 0) - self.means.repeat(b, *([1] * len(self.data_shape)))
        logn = _gauss_logpdf(diff, cov, self.data_shape).reshape(b, k)
        return torch.logsumexp(logn + self.weights.log(), dim=-1)

    # ----------------------------------------------------------------- marginals under an SDE
    def lifted(self, sde: LinearSDE) -> tuple[Tensor, LinearOp]:
        """Component means ``(K, *state)`` and covariances (``K`` rows) of the initial state."""
        cov = self.component_cov()
        if sde.block == 1:
            return self.means, cov
        vvar = sde.velocity_variance
        means = torch.stack([self.means, torch.zeros_like(self.means)], 1)
        c = cov.coef[..., 0, 0]
        zero = torch.zeros_like(c)
        vv = torch.full_like(c, float(vvar))
        blocks = torch.stack([torch.stack([c, zero], -1), torch.stack([zero, vv], -1)], -2)
        return means, LinearOp.block(blocks, basis=cov.basis)

    def marginal_components(
        self, t: Tensor | float, sde: LinearSDE, batch: int | None = None
    ) -> tuple[Tensor, Tensor, LinearOp, LinearOp, LinearOp]:
        """Marginal components at times ``t`` (``(B,)`` or one time broadcast to ``batch``).

        Returns ``(log_weights (K,), means (B*K, *state), covs C_kt, initial covs C_k,
        A_t)``, the operators with ``B*K`` rows ordered batch-major.
        """
        t = as_time(t, device=self.means.device)
        b = batch if batch is not None else t.numel()
        k = self.num_components
        kern = point_kernel(sde, t)
        a_op, s_op = kern.mean_op, kern.cov
        means0, cov0 = self.lifted(sde)
        self._check_bases(cov0, a_op, s_op, sde)
        a_rows = _rows(a_op, b, k, outer=True)
        s_rows = _rows(s_op, b, k, outer=True)
        c_rows = _rows(cov0, b, k, outer=False)
        cov_t = a_rows @ c_rows @ a_rows.T + s_rows
        mu = means0.repeat(b, *([1] * (means0.dim() - 1)))
        mean_t = a_rows.apply(mu)
        return self.weights.log(), mean_t, cov_t, c_rows, a_rows

    @staticmethod
    def _check_bases(cov0: LinearOp, a: LinearOp, s: LinearOp, sde: LinearSDE) -> None:
        ops = [op for op in (cov0, a, s) if op.mode_shape]
        bases = {op.basis for op in ops}
        if len(bases) > 1:
            raise ValueError(
                f"GaussianMixture: diagonal covariances in basis {cov0.basis!r} do not commute "
                f"with the operators of {type(sde).__name__} (basis "
                f"{(a.basis or s.basis)!r}); give isotropic covs, or diagonal covs with "
                "basis= the SDE's basis (e.g. DCTBasis(H, W) for blurring)"
            )

    def _components_in_basis(self, t: Tensor | float, sde: LinearSDE, b: int):
        """Like :meth:`marginal_components`, in the coordinates of the operators' common
        orthonormal basis (operators stripped of it), so each call needs one basis change of
        the batch instead of several of the batch times the components."""
        t = as_time(t, device=self.means.device)
        k = self.num_components
        kern = point_kernel(sde, t)
        a_op, s_op = kern.mean_op, kern.cov
        means0, cov0 = self.lifted(sde)
        self._check_bases(cov0, a_op, s_op, sde)
        # ops without mode axes are multiples of the identity: valid in any basis
        bases = [op.basis for op in (cov0, a_op, s_op) if op.mode_shape and op.basis is not None]
        basis = bases[0] if bases else None
        a_op, s_op, cov0 = (LinearOp(op.coef) for op in (a_op, s_op, cov0))
        if basis is not None:
            means0 = basis.forward(means0)
        a_rows = _rows(a_op, b, k, outer=True)
        c_rows = _rows(cov0, b, k, outer=False)
        cov_t = a_rows @ c_rows @ a_rows.T + _rows(s_op, b, k, outer=True)
        mu = means0.repeat(b, *([1] * (means0.dim() - 1)))
        return basis, mu, a_rows.apply(mu), cov_t, c_rows, a_rows

    def _posterior(self, u: Tensor, t: Tensor | float, sde: LinearSDE):
        u = u.to(torch.float64)
        b, k = u.shape[0], self.num_components
        basis, mu0, mean_t, cov_t, c0, a = self._components_in_basis(t, sde, b)
        if basis is not None:
            u = basis.forward(u)
        diff = u.repeat_interleave(k, 0) - mean_t
        data_shape = tuple(u.shape[1:]) if sde.block == 1 else tuple(u.shape[2:])
        logn = _gauss_logpdf(diff, cov_t, data_shape).reshape(b, k)
        return logn + self.weights.log(), diff, cov_t, c0, a, mu0, basis

    def marginal_log_prob(self, u: Tensor, t: Tensor | float, sde: LinearSDE) -> Tensor:
        """``log p_t(u)`` ``(B,)`` for states ``u`` ``(B, *state)`` (differentiable in ``u``)."""
        joint, *_ = self._posterior(u, t, sde)
        return torch.logsumexp(joint, dim=-1)

    def score(self, u: Tensor, t: Tensor | float, sde: LinearSDE) -> Tensor:
        """``grad_u log p_t(u)``, ``(B, *state)`` float64."""
        joint, diff, cov_t, _, _, _, basis = self._posterior(u, t, sde)
        w = torch.softmax(joint, dim=-1).reshape(-1, *([1] * (diff.dim() - 1)))
        per = -cov_t.solve(diff) * w
        out = per.reshape(u.shape[0], self.num_components, *u.shape[1:]).sum(1)
        return basis.inverse(out) if basis is not None else out

    def denoise(self, u: Tensor, t: Tensor | float, sde: LinearSDE) -> Tensor:
        """``E[u_0 | u_t = u]`` in state space, ``(B, *state)`` float64 (CLD: ``(x_0, v_0)``
        with ``v_0`` drawn from the lifted law, i.e. conditioned on the full initial state)."""
        joint, diff, cov_t, c0, a, mu0, basis = self._posterior(u, t, sde)
        w = torch.softmax(joint, dim=-1).reshape(-1, *([1] * (diff.dim() - 1)))
        per = (mu0 + (c0 @ a.T).apply(cov_t.solve(diff))) * w
        out = per.reshape(u.shape[0], self.num_components, *u.shape[1:]).sum(1)
        return basis.inverse(out) if basis is not None else out


def _gauss_logpdf(diff: Tensor, cov: LinearOp, data_shape: tuple[int, ...]) -> Tensor:
    """``log N(diff; 0, cov)`` per row, ``(N,)``."""
    white = cov.cholesky().solve(diff)
    d = diff[0].numel()
    quad = white.reshape(diff.shape[0], -1).pow(2).sum(-1)
    return -0.5 * (quad + cov.logdet(data_shape) + d * _LOG_2PI)


class Gaussian(GaussianMixture):
    """One Gaussian ``N(mean, cov)``; ``cov`` is a variance (number), or diagonal ``(*S)``
    variances in ``basis``."""

    def __init__(self, mean: Tensor, cov: Tensor | float, *, basis: Basis | None = None) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        covs = cov.reshape(1) if cov.dim() == 0 else cov[None]
        super().__init__(torch.ones(1, dtype=torch.float64), mean[None], covs, basis=basis)


class Dirac(GaussianMixture):
    """A point mass at ``point`` ``(*S)`` (zero covariance; marginals exist for ``t > 0``)."""

    def __init__(self, point: Tensor) -> None:
        point = torch.as_tensor(point, dtype=torch.float64)
        super().__init__(
            torch.ones(1, dtype=torch.float64), point[None], torch.zeros(1, dtype=torch.float64)
        )


class ExactScoreModel:
    """A score model ``(u_t, t) -> Prediction`` with the exact score of ``dist`` under ``sde``.

    Samplers, losses and metrics use it exactly like a trained network. The raw output is the
    exact score (``target="score"``) or the denoiser consistent with the SDE's training kernel
    (``target="x0"``: ``A_t^{-1}(u + Sigma_t score)``, which is ``E[u_0 | u_t]`` for kernels
    conditioned on the full initial state; for CLD's hybrid kernel it is ``(E[x_0|u_t], 0)``),
    or the matching noise (``target="eps"``, ``-K_t^T score``). Computed in float64 and cast to
    ``u_t``'s dtype.

    Args:
        dist: the data law.
        sde: the forward SDE.
        target: the parameterisation of ``raw``.
    """

    def __init__(self, dist: GaussianMixture, sde: LinearSDE, target: Target = "score") -> None:
        if target not in ("score", "x0", "eps"):
            raise ValueError(
                f"ExactScoreModel.target must be 'score', 'x0' or 'eps', got {target!r}"
            )
        dist_shape = dist.data_shape
        sde.check_data_shape(dist_shape)
        self.dist, self.sde, self.target = dist, sde, target

    def __call__(self, u_t: Tensor, t: Tensor) -> Prediction:
        b = u_t.shape[0]
        t = as_time(t, device=u_t.device)
        if t.numel() == 1:
            t = t.expand(b)
        score = self.dist.score(u_t, t, self.sde)
        kern = self.sde.kernel(t)
        if self.target == "score":
            raw = score
        elif self.target == "eps":
            raw = -kern.scale.T.apply(score)
        else:
            raw = kern.mean_op.solve(u_t.to(torch.float64) + kern.cov.apply(score))
        return Prediction(u_t=u_t, t=t, raw=raw.to(u_t.dtype), kernel=kern, target=self.target)
