"""Turn a raw denoiser network into a score model (docs/background/losses.md#targets,
docs/background/losses.md#edm-preconditioning).

:class:`Parameterization` wraps ``net(u, c_noise, cond)`` and a
:class:`~diffkit.sdes.base.LinearSDE` into ``model(u_t, t, cond=None) -> Prediction``:

1. the kernel at ``t`` is evaluated in float64;
2. the network input is ``c_in u_t`` (``input_scaling``), with ``c_in`` the inverse square
   root of the diagonal of ``sigma_data^2 Psi Psi^T + Sigma_t`` (the marginal variance of
   data with per-coordinate variance ``sigma_data^2``), cast to the network's dtype; for
   scalar kernels ``c_in = 1 / sqrt(sigma_data^2 alpha^2 + sigma^2)``, EDM's ``c_in`` in
   sigma-space [EDM, 2206.00364, Table 1];
3. ``c_noise = sde.noise_condition(t)`` (or ``log(rho) / 4`` under EDM preconditioning);
4. the raw output is returned as a :class:`~diffkit.prediction.Prediction` in ``target``.

Everything that depends on ``t`` alone (kernel, ``c_in``, ``c_noise``, the residual's operator,
EDM's coefficients) is a :class:`Conditioning`: built per call from ``t`` ``(B,)`` in
:meth:`Parameterization.forward`, or once per sampler grid by :meth:`Parameterization.on_grid`
(Python floats for scalar kernels), after which a sampler step costs the network call and a
few tensor operations. Both paths run :meth:`Parameterization.evaluate`.

Options:

* ``preconditioning="edm"`` (scalar kernels only): ``D(x~; rho) = c_skip x~ + c_out F(c_in x~;
  c_noise)`` with ``x~ = u_t / alpha`` and ``rho = sigma / alpha``, ``c_skip = s_d^2 / (rho^2 +
  s_d^2)``, ``c_out = rho s_d / sqrt(rho^2 + s_d^2)``, ``c_in = 1 / sqrt(rho^2 + s_d^2)``,
  ``c_noise = ln(rho) / 4``; the prediction is ``x0 = D``.
* ``velocity_only=True`` (CLD hybrid score matching): the network outputs only the velocity half
  ``(B, *data_shape)``, read as the velocity noise ``eps_v`` (``target="eps"``, CLD-SGM's
  ``reweightedv2`` parameterisation ``s_v = -l_t eps_v``) or as the velocity score ``s_v``
  (``target="score"``). It is placed into a full-state score ``(0, s_v)`` whose position half
  is zero; the Prediction is flagged ``velocity_only`` so that conversions needing the position
  half refuse. With the Cholesky factor ``K = L_t``,
  ``s_v = -[K^{-T} (0, eps_v)]_v = -eps_v / L_vv``.
* ``mixed_score=True`` (with ``velocity_only``; CLD-SGM's ``mixed_score``): the network learns a
  residual on top of the analytic velocity score of the reference kernel,
  ``s_v = -v / Sigma_vv(t) + s_v^net``, with ``Sigma_vv`` the training kernel's velocity
  variance (initial variances ``(0, gamma M)``) [CLD, 2112.07068 Sec. 3.2;
  docs/background/losses.md#hsm].
* ``residual="gaussian"``: the network output is added to the exact prediction (in ``target``)
  for data ``N(0, sigma_data^2 I)`` under the SDE's kernel, a linear map of ``u_t``
  (:func:`gaussian_operator`; operator form, so it is exact for VP, VE, blurring and CLD). A
  zero network is then that Gaussian's exact score model, right at high noise from the first
  step, where VP's noise level ``rho_T ~ 152`` amplifies any eps error. With ``velocity_only``
  the network's velocity score (read from eps_v or s_v as above) is added to the velocity half
  of the Gaussian's exact score (CLD hybrid score matching; an alternative to ``mixed_score``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from diffkit.denoisers.base import Denoiser
from diffkit.prediction import TARGETS, Prediction, Target, broadcast_time
from diffkit.sdes.base import GaussianKernel, LinearSDE
from diffkit.sdes.operators import LinearOp

__all__ = [
    "Conditioning",
    "Parameterization",
    "Preconditioning",
    "Residual",
    "gaussian_operator",
    "gaussian_prediction",
]

Preconditioning = Literal["none", "edm"]
Residual = Literal["none", "gaussian"]


def marginal_input_scale(kernel: GaussianKernel, sigma_data: float) -> LinearOp:
    """``c_in``: inverse square root of ``diag(sigma_data^2 Psi Psi^T + Sigma)`` per block."""
    psi = kernel.mean_op
    var = (psi @ psi.T) * (sigma_data**2) + kernel.cov
    c = var.coef
    if var.k == 1:
        return LinearOp(c.clamp_min(1e-30).rsqrt(), var.basis)
    diag = torch.diagonal(c, dim1=-2, dim2=-1).clamp_min(1e-30).rsqrt()
    return LinearOp(torch.diag_embed(diag), var.basis)


def gaussian_operator(
    sde: LinearSDE, t: Tensor, kernel: GaussianKernel, target: str, sigma_data: float
) -> LinearOp:
    """The linear map ``u_t -> `` exact ``target`` (``eps`` | ``x0`` | ``v`` | ``score``) of data
    ``N(0, sigma_data^2 I)`` at ``t``, float64, one row per time (see the module docstring,
    ``residual``).

    ``kernel`` is the SDE's training kernel at ``t``; the marginal covariance ``C`` uses the point
    kernel (the SDE's ``point_kernel`` if it defines one) and, for ``block = 2`` states, the
    initial velocity variance ``sde.velocity_variance``. Then ``score = -C^{-1} u``,
    ``eps = K^T C^{-1} u``, ``x0 = A^{-1} (I - Sigma C^{-1}) u`` and, for scalar kernels,
    ``v = alpha eps - sigma x0``.
    """
    pk = sde.point_kernel(t)
    a = pk.mean_op
    if sde.block == 1:
        c0 = LinearOp.scalar(torch.full((1,), sigma_data**2, dtype=torch.float64, device=t.device))
    else:
        var = torch.tensor([sigma_data**2, sde.velocity_variance], dtype=torch.float64)
        c0 = LinearOp.block(torch.diag(var).to(t.device)[None])
    precision = (a @ c0 @ a.T + pk.cov).inv()
    if target == "score":
        return -precision
    eps = kernel.scale.T @ precision
    if target == "eps":
        return eps
    eye = LinearOp.scalar(torch.ones(1, dtype=torch.float64, device=t.device), k=sde.block)
    x0 = kernel.mean_op.inv() @ (eye - kernel.cov @ precision)
    if target == "x0":
        return x0
    if target == "v":  # v = alpha eps - sigma x0 (scalar variance-preserving kernels)
        if not kernel.is_scalar:
            raise ValueError("residual='gaussian' with target 'v' needs a scalar kernel (vp)")
        alpha, sigma = kernel.alpha_sigma()
        return eps * alpha - x0 * sigma
    raise ValueError(
        f"residual='gaussian' is defined for targets 'eps', 'x0', 'v' and 'score', got {target!r}"
    )


def gaussian_prediction(
    sde: LinearSDE, u_t: Tensor, t: Tensor, kernel: GaussianKernel, target: str, sigma_data: float
) -> Tensor:
    """Exact ``target`` of data ``N(0, sigma_data^2 I)`` at ``(u_t, t)``, float64
    ``(B, *state)``: :func:`gaussian_operator` applied to ``u_t``."""
    op = gaussian_operator(sde, t, kernel, target, sigma_data)
    return op.apply(u_t.to(torch.float64))


Coefficient = float | Tensor | LinearOp


@dataclass(frozen=True)
class Conditioning:
    """What :class:`Parameterization` computes from the time alone, for one evaluation.

    Built per call from ``t`` ``(B,)`` (scalar coefficients as ``(B, 1, ..., 1)`` tensors) or
    once per grid time by :meth:`Parameterization.on_grid` (scalar coefficients as Python floats,
    operators as single-row :class:`LinearOp`).

    Attributes:
        t: ``(B,)`` or 0-d float64.
        kernel: the SDE's kernel at ``t`` (``B`` rows, or one row that broadcasts).
        c_noise: the network's noise input, ``(B,)`` or 0-d, in the network's dtype.
        c_in: input scale (``None``: none); applied in the state's dtype, before the cast to
            the network's.
        residual: linear map ``u_t ->`` the Gaussian residual's base prediction (float64).
        skip, out: EDM's ``D = skip u_t + out F`` (``skip = c_skip / alpha``), else ``None``.
    """

    t: Tensor
    kernel: GaussianKernel
    c_noise: Tensor
    c_in: Coefficient | None = None
    residual: Coefficient | None = None
    skip: float | Tensor | None = None
    out: float | Tensor | None = None


def _scale(c: Coefficient, x: Tensor) -> Tensor:
    """``c x`` in ``x``'s dtype, for a number, a broadcastable tensor or an operator."""
    if isinstance(c, LinearOp):
        return c.apply(x)
    return x * (c.to(x.dtype) if isinstance(c, Tensor) else c)


class Parameterization(nn.Module):
    """A score model built from a raw network.

    Args:
        sde: the forward SDE (its kernel defines every conversion).
        net: the raw network ``net(u, c_noise, cond)``.
        target: what the network output is (``eps`` | ``x0`` | ``v`` | ``score``).
        velocity_only: the network outputs only the velocity half (CLD HSM); ``target`` must be
            ``eps`` or ``score``.
        preconditioning: ``none`` or ``edm`` (scalar SDEs; requires ``target="x0"``).
        input_scaling: multiply the network input by ``c_in`` (see the module docstring).
        sigma_data: data standard deviation assumed by ``c_in`` and EDM preconditioning.
        mixed_score: add the analytic ``-v / Sigma_vv(t)`` to the velocity score (CLD HSM).
        residual: ``none`` or ``gaussian``: the network output is a residual over the exact
            prediction for ``N(0, sigma_data^2 I)`` data (targets ``eps``, ``x0``, ``score``, and
            ``v`` on variance-preserving scalar SDEs).
    """

    def __init__(
        self,
        sde: LinearSDE,
        net: Denoiser,
        target: Target = "eps",
        *,
        velocity_only: bool = False,
        preconditioning: Preconditioning = "none",
        input_scaling: bool = True,
        sigma_data: float = 0.5,
        mixed_score: bool = False,
        residual: Residual = "none",
    ) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"Parameterization.target must be one of {TARGETS}, got {target!r}")
        if preconditioning not in ("none", "edm"):
            raise ValueError(
                f"Parameterization.preconditioning must be 'none' or 'edm', got {preconditioning!r}"
            )
        if sigma_data <= 0:
            raise ValueError(f"Parameterization.sigma_data must be > 0, got {sigma_data}")
        probe = sde.kernel(torch.tensor([0.5 * sde.T], dtype=torch.float64))
        if target == "v" and not getattr(sde, "supports_v", False):
            raise ValueError(
                f"target 'v' is defined only for variance-preserving scalar SDEs; "
                f"{type(sde).__name__} has supports_v=False: use target 'eps' or 'x0'"
            )
        if velocity_only:
            if sde.block != 2:
                raise ValueError(
                    f"velocity_only=True needs a CLD-type SDE with (x, v) states (block = 2); "
                    f"{type(sde).__name__} has block = {sde.block}: set velocity_only=False"
                )
            if target not in ("eps", "score"):
                raise ValueError(
                    f"velocity_only=True supports target 'eps' (velocity noise) or 'score' "
                    f"(velocity score), got {target!r}"
                )
        if mixed_score and not velocity_only:
            raise ValueError(
                "mixed_score=True adds an analytic velocity score and needs velocity_only=True "
                "(CLD hybrid score matching, loss 'hsm')"
            )
        if preconditioning == "edm":
            if not probe.is_scalar:
                raise ValueError(
                    f"preconditioning='edm' needs a scalar kernel (vp, ve); "
                    f"{type(sde).__name__} has an operator-valued kernel: "
                    "use preconditioning='none'"
                )
            if target != "x0" or velocity_only:
                raise ValueError(
                    f"preconditioning='edm' predicts x0 (D = c_skip x + c_out F): set target='x0', "
                    f"got target={target!r}"
                )
        if residual not in ("none", "gaussian"):
            raise ValueError(
                f"Parameterization.residual must be 'none' or 'gaussian', got {residual!r}"
            )
        if residual == "gaussian":
            if mixed_score:
                raise ValueError(
                    "residual='gaussian' and mixed_score=True are two analytic bases for the "
                    "velocity score (the Gaussian's exact one and -v / Sigma_vv): keep one"
                )
            if preconditioning != "none":
                raise ValueError(
                    "residual='gaussian' cannot be combined with preconditioning='edm' (whose "
                    "c_skip term is already a Gaussian skip): set one of them to 'none'"
                )
        self.sde = sde
        self.net = net
        self.residual: Residual = residual
        self.target: Target = target
        self.velocity_only = bool(velocity_only)
        self.preconditioning: Preconditioning = preconditioning
        self.input_scaling = bool(input_scaling)
        self.sigma_data = float(sigma_data)
        self.mixed_score = bool(mixed_score)
        # Per-grid conditioning tables: (id(times), device, dtype) -> (weakref(times), rows).
        self._grid_tables: dict[tuple, tuple[weakref.ref, list[Conditioning]]] = {}

    def net_dtype(self) -> torch.dtype:
        """The network's floating dtype (float32 for a network without floating parameters)."""
        p = self._first_float_parameter()
        return torch.float32 if p is None else p.dtype

    def _first_float_parameter(self) -> Tensor | None:
        return next((p for p in self.net.parameters() if p.is_floating_point()), None)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deep-copy without the per-grid tables (rebuilt on use)."""
        state = self.__dict__.copy()
        state["_grid_tables"] = {}
        return state

    # ------------------------------------------------------------------ evaluation
    def forward(
        self, u_t: Tensor, t: Tensor | float | Conditioning, cond: Tensor | None = None
    ) -> Prediction:
        """``u_t``: ``(B, *state)``; ``t``: ``(B,)`` (or a number), or a precomputed
        :class:`Conditioning` (what :meth:`on_grid` passes) -> :class:`Prediction`."""
        if isinstance(t, Conditioning):
            return self.evaluate(u_t, t, cond)
        t = broadcast_time(t, u_t.shape[0], u_t.device)
        return self.evaluate(u_t, self.conditioning(t, self.net_dtype(), u_t.dim() - 1), cond)

    def evaluate(self, u_t: Tensor, c: Conditioning, cond: Tensor | None = None) -> Prediction:
        """The prediction at ``u_t`` ``(B, *state)`` under precomputed conditioning ``c``."""
        b = u_t.shape[0]
        # Input scaling in the state's dtype, then one rounding to the network's.
        x_in = u_t if c.c_in is None else _scale(c.c_in, u_t)
        raw = self.net(x_in.to(c.c_noise.dtype), c.c_noise.expand(b), cond)
        t = c.t.expand(b)
        if self.velocity_only:
            raw = self._velocity_to_score(raw, u_t, c.kernel)
            if c.residual is not None:  # the Gaussian's exact velocity score as the base
                base = _scale(c.residual, u_t.to(torch.float64))[:, 1:2]
                raw = raw + torch.cat([torch.zeros_like(base), base], 1).to(raw.dtype)
            return Prediction(u_t, t, raw, c.kernel, "score", velocity_only=True)
        if raw.shape != u_t.shape:
            raise ValueError(
                f"the denoiser returned shape {tuple(raw.shape)} for states {tuple(u_t.shape)}; "
                "its spec.output_shape must equal the state shape for a full-state target"
            )
        if c.skip is not None:  # EDM: D = c_skip u / alpha + c_out F
            d = u_t.to(raw.dtype) * c.skip + raw * c.out
            return Prediction(u_t, t, d.to(u_t.dtype), c.kernel, "x0")
        if c.residual is not None:
            if isinstance(c.residual, float) and u_t.dtype == raw.dtype:
                raw = raw.add(u_t, alpha=c.residual)
            elif isinstance(c.residual, float):
                raw = raw + (u_t * c.residual).to(raw.dtype)
            else:
                raw = raw + _scale(c.residual, u_t.to(torch.float64)).to(raw.dtype)
        return Prediction(u_t, t, raw, c.kernel, self.target)

    # ------------------------------------------------------------------ conditioning
    def _coefficients(self, t: Tensor) -> dict[str, Any]:
        """Everything that depends on ``t`` ``(N,)`` only, float64: the kernel, ``c_noise``,
        and ``(N,)`` vectors (scalar kernels) or operators for ``c_in``, ``residual``, EDM's
        ``skip`` and ``out``."""
        kernel = self.sde.kernel(t)
        co: dict[str, Any] = {"kernel": kernel}
        scalar = kernel.is_scalar
        sd = self.sigma_data
        if self.preconditioning == "edm":
            alpha, sigma = kernel.alpha_sigma()
            rho = sigma / alpha
            norm = (rho**2 + sd**2).sqrt()
            co["c_noise"] = 0.25 * rho.log()
            co["c_in"] = 1.0 / (alpha * norm)
            co["skip"] = sd**2 / (norm**2 * alpha)
            co["out"] = rho * sd / norm
            return co
        co["c_noise"] = self.sde.noise_condition(t)
        if self.input_scaling:
            if scalar:
                alpha, sigma = kernel.alpha_sigma()
                co["c_in"] = (sd**2 * alpha**2 + sigma**2).clamp_min(1e-30).rsqrt()
            else:
                co["c_in"] = marginal_input_scale(kernel, sd)
        if self.residual == "gaussian":
            # velocity-only networks add to the velocity half of the exact score
            target = "score" if self.velocity_only else self.target
            op = gaussian_operator(self.sde, t, kernel, target, sd)
            co["residual"] = op.coef[:, 0, 0] if op.is_scalar else op
        return co

    def conditioning(self, t: Tensor, dtype: torch.dtype, data_dims: int) -> Conditioning:
        """Conditioning at ``t`` ``(B,)`` float64 for states with ``data_dims`` axes after the
        batch; network inputs in ``dtype``."""
        co = self._coefficients(t)
        shape = (-1,) + (1,) * data_dims

        def per_sample(name: str, cast: torch.dtype) -> Coefficient | None:
            v = co.get(name)
            if v is None or isinstance(v, LinearOp):
                return v
            return v.to(cast).reshape(shape)

        return Conditioning(
            t=t,
            kernel=co["kernel"],
            c_noise=co["c_noise"].to(device=t.device, dtype=dtype),
            c_in=per_sample("c_in", torch.float64),
            residual=per_sample("residual", torch.float64),
            skip=per_sample("skip", dtype),
            out=per_sample("out", dtype),
        )

    def grid_conditioning(
        self, times: Tensor, device: torch.device, dtype: torch.dtype
    ) -> list[Conditioning]:
        """One :class:`Conditioning` per time of ``times`` ``(N + 1,)``, for states on
        ``device`` and network inputs in ``dtype``; cached per (grid, device, dtype) while the
        grid tensor lives (samplers keep theirs in the cached plan)."""
        key = (id(times), device, dtype)
        hit = self._grid_tables.get(key)
        if hit is not None and hit[0]() is times:
            return hit[1]
        t = times.to(device=device, dtype=torch.float64, copy=True)  # rows must not pin `times`
        co = self._coefficients(t)
        n = t.shape[0]

        def rows(name: str, cast: torch.dtype) -> list[Any]:
            v = co.get(name)
            if v is None:
                return [None] * n
            if isinstance(v, LinearOp):
                c = v.coef.to(cast)
                return [LinearOp(c[i : i + 1], v.basis) for i in range(n)]
            return v.tolist()

        k = co["kernel"]
        table = [
            Conditioning(
                t=ti,
                kernel=GaussianKernel(k.mean_op[i], k.cov[i], k.scale[i]),
                c_noise=ci,
                c_in=cin,
                residual=res,
                skip=sk,
                out=ou,
            )
            for i, (ti, ci, cin, res, sk, ou) in enumerate(
                zip(
                    t.unbind(),
                    co["c_noise"].to(dtype).unbind(),
                    rows("c_in", torch.float64),
                    rows("residual", torch.float64),
                    rows("skip", dtype),
                    rows("out", dtype),
                    strict=True,
                )
            )
        ]
        for stale in [key for key, (ref, _) in self._grid_tables.items() if ref() is None]:
            del self._grid_tables[stale]
        self._grid_tables[key] = (weakref.ref(times), table)
        return table

    def on_grid(
        self, times: Tensor, cond: Tensor | None = None
    ) -> Callable[[Tensor, int], Prediction]:
        """``(u_t, i) -> Prediction`` at ``times[i]``, with the kernel, ``c_in``, ``c_noise``
        and residual precomputed once per grid (see :func:`diffkit.prediction.on_grid`)."""
        return _OnGrid(self, times, cond)

    def conditioned(self, cond: Tensor) -> ConditionedModel:
        """This score model with class labels ``cond`` ``(B,)`` bound."""
        return ConditionedModel(self, cond)

    def _velocity_to_score(self, raw: Tensor, u_t: Tensor, kernel: GaussianKernel) -> Tensor:
        if raw.shape != u_t[:, 1].shape:
            raise ValueError(
                f"a velocity-only denoiser must return the velocity half {tuple(u_t[:, 1].shape)}, "
                f"got {tuple(raw.shape)}; set spec.output_shape to the data shape"
            )
        zero = torch.zeros_like(raw)
        s_v = (
            raw
            if self.target == "score"
            else (-kernel.scale.T.solve(torch.stack([zero, raw], 1)))[:, 1]
        )
        if self.mixed_score:
            inv_var_v = LinearOp(1.0 / kernel.cov.coef[..., 1:, 1:], kernel.cov.basis)
            s_v = s_v - inv_var_v.apply(u_t[:, 1].to(torch.float64)).to(s_v.dtype)
        return torch.stack([zero, s_v], dim=1)


class _OnGrid:
    """:meth:`Parameterization.on_grid`: the rows for the current device and network dtype,
    passed to the model's ``__call__`` (so forward hooks and ``forward`` overrides apply)."""

    def __init__(self, model: Parameterization, times: Tensor, cond: Tensor | None) -> None:
        self.model, self.times, self.cond = model, times, cond
        self._key: tuple[torch.device, torch.dtype] | None = None
        self._rows: list[Conditioning] = []
        # Module conversions (.to, .double, ...) change a parameter's dtype in place, so one
        # parameter tells the network's dtype at every call without walking the module tree.
        self._probe = model._first_float_parameter()

    def __call__(self, u_t: Tensor, i: int) -> Prediction:
        key = (u_t.device, torch.float32 if self._probe is None else self._probe.dtype)
        if key != self._key:
            self._rows, self._key = self.model.grid_conditioning(self.times, *key), key
        return self.model(u_t, self._rows[i], self.cond)


class ConditionedModel:
    """A :class:`Parameterization` with class labels bound: ``model(u_t, t)`` and
    ``on_grid(times)`` as the unconditional score-model interface."""

    def __init__(self, model: Parameterization, cond: Tensor) -> None:
        self.model, self.cond = model, cond

    def __call__(self, u_t: Tensor, t: Tensor | float) -> Prediction:
        return self.model(u_t, t, cond=self.cond)

    def on_grid(self, times: Tensor) -> Callable[[Tensor, int], Prediction]:
        return self.model.on_grid(times, self.cond)
