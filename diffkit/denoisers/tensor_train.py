"""Functional tensor-train (FTT) denoiser [BE24 eqs. 8-13; TTDE, 2108.00089; Oseledets, SIAM J.
Sci. Comput. 2011] (docs/background/denoisers.md#tensor-train), built on tensorly.

Each output coordinate is a multilinear form in per-coordinate 1-D features:

``f_y(u) = sum_{k_1..k_n} A[k_1, .., k_n, y] prod_i phi_i^{k_i}(u_i),
A[k_1, .., k_n, :] = G_1[:, k_1, :] G_2[:, k_2, :] ... G_n[:, k_n, :]``

with TT cores ``G_i`` of shape ``(r_{i-1}, m_i, r_i)``. Evaluation is the ordered matrix chain
``C_1(u_1) C_2(u_2) ... C_n(u_n)`` with ``C_i(u_i) = sum_k G_i[:, k, :] phi_i^k(u_i)`` (BE24's
sum over ``i`` is an erratum); each ``C_i`` is one :func:`tensorly.tenalg.mode_dot` of the core
with the ``(B, m_i)`` feature matrix, so the cost is ``O(B sum_i m_i r_{i-1} r_i)`` with a loop
over the cores only, never over samples.

Design choices (justified):

* **Modes.** ``[class] [time] u_1 .. u_D``: the flattened state (CLD: positions and velocities);
  time enters as an extra first mode (denoisers.md option (ii)): ``tau`` is ``c_noise`` mapped
  affinely from ``time_domain`` (and clamped), with its own basis, so ``f`` is jointly low-rank in
  ``(t, u)``. ``time="embedding"`` instead adds BE24's sinusoidal embedding of width ``D`` to the
  input (option (i), weak for small ``D``; kept for comparison with the draft). Class labels,
  when the spec has classes, are a one-hot mode (an extra index for "no class").
* **Outputs.** ``outputs="shared"`` (default, option (b)): all cores are shared and the last
  core is vector-valued, ``G_n in R^{r x m x D_y}``, so one chain gives every output and the
  parameter count is ``m (r + (n - 2) r^2 + r D_y)``; the outputs of a denoiser are strongly
  coupled (the score of a smooth density), which is what sharing exploits.
  ``outputs="separate"`` is the draft's formulation (a): ``D_y`` independent TTs, stored as cores
  with a leading output axis and contracted together (no loop over outputs).
* **Initialisation.** Every non-final ``C_i`` starts close to an identity-like block (B-splines sum
  to one; ``phi^0`` of the orthonormal Legendre basis is ``1 / sqrt 2``), plus ``init_std``
  noise, so the chain neither explodes nor vanishes for large ``n``; the output core starts at
  ``init_std`` scale so the initial prediction is close to 0.
* **Inputs.** Coordinates are expected roughly standardised (the Parameterization's ``c_in`` does
  this), mapped from ``domain`` and clamped to it (a constant extension: B-splines that vanish
  outside the domain predict 0 there, and reverse-time trajectories that leave it escape).
* **Time domain.** ``time_domain`` is the range of the SDE's ``c_noise``: ``[0, 1]`` for vp
  (linear, cosine) and cld (``t``), about ``[-1.2, 1.0]`` for ve (``ln(sigma) / 4``),
  ``[-1, 999]`` for vp's ddpm schedule.

Cores are ``nn.Parameter`` s trained with Adam (autograd through the chain), by alternating least
squares (:mod:`diffkit.denoisers.tt_als`) or by Riemannian SGD on the fixed-rank manifold
(:mod:`diffkit.denoisers.tt_riemannian`), chosen by ``optimizer``; :meth:`TensorTrain.tt_cores`
exports them as a ``tensorly`` TT (``tl.tt_to_tensor`` gives the dense coefficient tensor on tiny
cases). tensorly 0.10 has TT-SVD of dense tensors but no TT orthogonalisation, rounding or
tangent-space projection; :mod:`diffkit.denoisers.tt_manifold` provides them.
"""

from __future__ import annotations

import math
from typing import Literal

import tensorly as tl
import torch
from tensorly import tenalg
from torch import Tensor, nn

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.bases import BSplineBasis, LegendreBasis
from diffkit.denoisers.embeddings import SinusoidalEmbedding

__all__ = ["TensorTrain"]

tl.set_backend("pytorch")


def _identity_like(r0: int, r1: int) -> Tensor:
    return torch.eye(r0, r1, dtype=torch.float64)


class TensorTrain(Denoiser):
    """Functional tensor-train denoiser.

    Args:
        spec: shapes (injected by the module).
        rank: TT rank ``r`` of every inner bond.
        basis: ``bspline`` (degree ``degree``, TTDE) or ``legendre``.
        num_basis: functions per state coordinate ``m``.
        degree: B-spline degree.
        domain: interval ``[a, b]`` of every (scaled) state coordinate (inputs are clamped).
        time: ``mode`` (extra TT mode) or ``embedding`` (BE24's additive embedding).
        time_basis: functions of the time mode.
        time_domain: range of ``c_noise`` mapped onto the time basis (clamped).
        outputs: ``shared`` (vector-valued last core) or ``separate`` (one TT per output).
        init_std: scale of the initial noise on the cores.
        seed: seed of the initialisation generator.
        optimizer: ``adam`` (the module's optimizer on the cores, autograd), ``als``
            (:class:`~diffkit.denoisers.tt_als.AlternatingLeastSquares`) or ``riemannian``
            (:class:`~diffkit.denoisers.tt_riemannian.RiemannianSGD`). The last two need
            ``outputs="shared"``, keep the cores in float64, cap each inner rank at what the mode
            sizes allow (``r_k <= min(prod m_{<=k}, D_y prod m_{>k})``, so the ranks are
            the manifold's) and make the module train manually (its ``optimizer`` and
            ``lr_scheduler`` are then unused).
        ridge: ``lambda`` of the ridge term ``lambda / 2 ||A||_F^2`` on the whole coefficient
            tensor (``als``, ``riemannian``).
        als_proximal: weight of the proximal term ``mu / 2 ||A - A_prev||_F^2`` of each ALS core
            solve, relative to the mean diagonal of the core's Gram matrix (damps the jump
            between successive pools; 0 is plain ALS).
        riemannian_lr: step size of Riemannian SGD.
        riemannian_momentum: heavy-ball momentum of Riemannian SGD (the previous direction is
            transported by projection onto the new tangent space).
    """

    def __init__(
        self,
        spec: DenoiserSpec,
        /,
        rank: int = 8,
        basis: Literal["bspline", "legendre"] = "bspline",
        num_basis: int = 8,
        degree: int = 2,
        domain: tuple[float, float] = (-5.0, 5.0),
        time: Literal["mode", "embedding"] = "mode",
        time_basis: int = 8,
        time_domain: tuple[float, float] = (0.0, 1.0),
        outputs: Literal["shared", "separate"] = "shared",
        init_std: float = 1e-2,
        seed: int = 0,
        optimizer: Literal["adam", "als", "riemannian"] = "adam",
        ridge: float = 1e-6,
        als_proximal: float = 0.0,
        riemannian_lr: float = 0.5,
        riemannian_momentum: float = 0.5,
    ) -> None:
        super().__init__(spec)
        if rank < 1 or num_basis < 1 or time_basis < 1:
            raise ValueError(
                f"TensorTrain needs rank, num_basis, time_basis >= 1; got {rank}, {num_basis}, "
                f"{time_basis}"
            )
        if basis not in ("bspline", "legendre"):
            raise ValueError(f"TensorTrain.basis must be 'bspline' or 'legendre', got {basis!r}")
        if time not in ("mode", "embedding"):
            raise ValueError(f"TensorTrain.time must be 'mode' or 'embedding', got {time!r}")
        if outputs not in ("shared", "separate"):
            raise ValueError(f"TensorTrain.outputs must be 'shared' or 'separate', got {outputs!r}")
        if optimizer not in ("adam", "als", "riemannian"):
            raise ValueError(
                f"TensorTrain.optimizer must be 'adam', 'als' or 'riemannian', got {optimizer!r}"
            )
        if optimizer != "adam" and outputs != "shared":
            raise ValueError(
                f"TensorTrain.optimizer={optimizer!r} trains the shared-output TT; "
                "set outputs='shared' (or optimizer='adam')"
            )
        if ridge < 0 or als_proximal < 0 or riemannian_lr <= 0 or not 0 <= riemannian_momentum < 1:
            raise ValueError(
                "TensorTrain needs ridge >= 0, als_proximal >= 0, riemannian_lr > 0 and "
                f"0 <= riemannian_momentum < 1; got {ridge}, {als_proximal}, {riemannian_lr}, "
                f"{riemannian_momentum}"
            )
        if not time_domain[1] > time_domain[0]:
            raise ValueError(f"TensorTrain.time_domain needs hi > lo, got {time_domain}")
        self.d_in = math.prod(spec.state_shape)
        self.d_out = math.prod(spec.output_shape)
        self.basis_kind, self.time_kind, self.outputs = basis, time, outputs
        self.time_domain = (float(time_domain[0]), float(time_domain[1]))

        def make_basis(m: int, lo: float, hi: float) -> nn.Module:
            if basis == "bspline":
                return BSplineBasis(m, lo, hi, degree)
            return LegendreBasis(m, lo, hi)

        self.x_basis = make_basis(num_basis, float(domain[0]), float(domain[1]))
        sizes: list[int] = []
        if spec.num_classes is not None:
            sizes.append(spec.num_classes + 1)
        if time == "mode":
            self.t_basis: nn.Module | None = make_basis(time_basis, -1.0, 1.0)
            sizes.append(time_basis)
            self.embed = None
        else:
            self.t_basis = None
            self.embed = SinusoidalEmbedding(self.d_in + self.d_in % 2, 1e-4, 1.0)
        sizes += [num_basis] * self.d_in
        self.mode_sizes = tuple(sizes)
        self.num_classes = spec.num_classes
        n = len(sizes)
        if n < 2:
            raise ValueError("TensorTrain needs at least two modes (state plus time or class)")
        ranks = [1] + [rank] * (n - 1) + ([self.d_out] if outputs == "shared" else [1])
        if optimizer != "adam":  # full ranks: the fixed-rank manifold, QR-orthogonalisable
            for i in range(1, n):
                cap = min(math.prod(sizes[:i]), math.prod(sizes[i:]) * self.d_out)
                ranks[i] = min(ranks[i], cap)
        self.ranks = tuple(ranks)
        self.optimizer_kind = optimizer
        self.ridge, self.als_proximal = float(ridge), float(als_proximal)
        self.riemannian_lr = float(riemannian_lr)
        self.riemannian_momentum = float(riemannian_momentum)
        #: the module trains manually with :meth:`make_optimizer` when True.
        self.manual_optimization = optimizer != "adam"
        param_dtype = torch.float32 if optimizer == "adam" else torch.float64
        gen = torch.Generator().manual_seed(seed)
        cores = []
        for i, m in enumerate(sizes):
            r0, r1 = ranks[i], ranks[i + 1]
            lead = () if outputs == "shared" else (self.d_out,)
            noise = torch.randn(*lead, r0, m, r1, generator=gen, dtype=torch.float64) * init_std
            core = noise if i == n - 1 else noise + self._constant_block(i, m, r0, r1, lead)
            cores.append(nn.Parameter(core.to(param_dtype)))
        self.cores = nn.ParameterList(cores)

    def _constant_block(self, i: int, m: int, r0: int, r1: int, lead: tuple[int, ...]) -> Tensor:
        """Core whose contraction with any feature vector is ~ an identity-like block."""
        eye = _identity_like(r0, r1)
        block = torch.zeros(r0, m, r1, dtype=torch.float64)
        is_class = self.num_classes is not None and i == 0
        if is_class or self.basis_kind == "bspline":
            block[:] = eye[:, None, :]  # one-hot / partition of unity: sum_k phi^k = 1
        else:
            block[:, 0, :] = math.sqrt(2.0) * eye  # phi^0 = 1 / sqrt(2)
        return block.expand(*lead, r0, m, r1).clone()

    # ------------------------------------------------------------------ features
    def features(
        self, u: Tensor, c_noise: Tensor, cond: Tensor | None, dtype: torch.dtype | None = None
    ) -> list[Tensor]:
        """Per-mode feature matrices ``(B, m_i)``, in ``dtype`` (default: the cores')."""
        b = u.shape[0]
        dtype = self.cores[0].dtype if dtype is None else dtype
        x = u.reshape(b, -1).to(dtype)
        feats: list[Tensor] = []
        if self.num_classes is not None:
            idx = torch.full((b,), self.num_classes, dtype=torch.long, device=u.device)
            if cond is not None:
                c = cond.to(device=u.device, dtype=torch.long).reshape(-1)
                idx = torch.where(c < 0, idx, c)
            feats.append(nn.functional.one_hot(idx, self.num_classes + 1).to(dtype))
        if self.t_basis is not None:
            lo, hi = self.time_domain
            tau = (2 * (c_noise.to(dtype) - lo) / (hi - lo) - 1).clamp(-1.0, 1.0)
            feats.append(self.t_basis(tau.reshape(b, 1))[:, 0])
        else:
            x = x + self.embed(c_noise.to(torch.float64)).to(dtype)[:, : self.d_in]
        phi = self.x_basis(x)  # (B, D, m)
        feats.extend(phi.unbind(1))
        return feats

    # ------------------------------------------------------------------ contraction
    def contract(self, feats: list[Tensor]) -> Tensor:
        """The matrix chain ``C_1 ... C_n`` for ``(B, m_i)`` features -> ``(B, D_y)``."""
        shared = self.outputs == "shared"

        def chain_factor(core: Tensor, phi: Tensor) -> Tensor:
            if shared:
                return tenalg.mode_dot(core, phi, 1).permute(1, 0, 2)  # (B, r0, r1)
            return tenalg.mode_dot(core, phi, 2).permute(2, 0, 1, 3)  # (B, D_y, r0, r1)

        cores = list(self.cores)  # not a slice: a sliced ParameterList re-wraps its entries
        w = chain_factor(cores[0], feats[0])
        for core, phi in zip(cores[1:], feats[1:], strict=True):
            w = w @ chain_factor(core, phi)
        return w.reshape(w.shape[0], -1)

    def forward(self, u: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """``u``: ``(B, *state_shape)``; ``c_noise``: ``(B,)`` -> ``(B, *output_shape)``."""
        if tuple(u.shape[1:]) != tuple(self.spec.state_shape):
            raise ValueError(
                f"TensorTrain built for states {self.spec.state_shape}, got {tuple(u.shape[1:])}"
            )
        y = self.contract(self.features(u, c_noise, cond))
        return y.reshape(u.shape[0], *self.spec.output_shape)

    # ------------------------------------------------------------------ tensorly views
    def tt_cores(self, output: int | None = None) -> list[Tensor]:
        """The cores as a tensorly TT (boundary ranks 1).

        ``shared``: the output index becomes a last mode (a ``(D_y, D_y, 1)`` identity core);
        ``separate``: the TT of output ``output``.
        """
        if self.outputs == "shared":
            eye = torch.eye(self.d_out, dtype=self.cores[0].dtype, device=self.cores[0].device)
            return [*self.cores, eye[:, :, None]]
        if output is None:
            raise ValueError("TensorTrain.tt_cores(output=...) is required for outputs='separate'")
        return [c[output] for c in self.cores]

    def dense_coefficients(self, output: int | None = None) -> Tensor:
        """The full coefficient tensor via ``tl.tt_to_tensor`` (tiny cases only)."""
        return tl.tt_to_tensor(self.tt_cores(output))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ ALS / RO training
    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of ``optimizer='als' | 'riemannian'`` over the cores (see
        :mod:`diffkit.denoisers.tt_als`, :mod:`diffkit.denoisers.tt_riemannian`)."""
        if self.optimizer_kind == "als":
            from diffkit.denoisers.tt_als import AlternatingLeastSquares

            return AlternatingLeastSquares(self, ridge=self.ridge, proximal=self.als_proximal)
        if self.optimizer_kind == "riemannian":
            from diffkit.denoisers.tt_riemannian import RiemannianSGD

            return RiemannianSGD(
                self, lr=self.riemannian_lr, momentum=self.riemannian_momentum, ridge=self.ridge
            )
        raise ValueError("TensorTrain.make_optimizer: optimizer='adam' uses the module's optimizer")
