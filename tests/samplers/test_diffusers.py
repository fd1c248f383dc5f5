"""diffusers' DDIMScheduler equals diffkit's DDIM on the same grid (benchmark-only extra).

The scheduler's ``alphas_cumprod`` is replaced by diffkit's continuous VP ``alpha_bar(t)`` at
``t = (i + 1) / 1000`` so both walk the same schedule; with ``clip_sample=False`` and
``set_alpha_to_one=True`` the last step goes to ``alpha_bar = 1``, i.e. ``t = 0``
(docs/background/samplers.md#diffusers). Both run in float64.
"""

from __future__ import annotations

import pytest
import torch

from diffkit.samplers.ddim import DDIM
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.vp import VPSDE

diffusers = pytest.importorskip("diffusers")


class _GridDDIM(DDIM):
    """DDIM on an explicit decreasing grid."""

    def __init__(self, grid_times: torch.Tensor, eta: float) -> None:
        super().__init__(steps=len(grid_times) - 1, eta=eta)
        self.grid_times = grid_times

    def times(self, sde):
        return self.grid_times


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_diffusers_ddim_matches(eta: float, gaussian_score) -> None:
    sde = VPSDE()
    n_train, steps = 1000, 10
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=n_train, clip_sample=False, set_alpha_to_one=True
    )
    t_cont = (torch.arange(n_train, dtype=torch.float64) + 1) / n_train
    # float64 on both sides, so that the comparison is not limited by float32 round-off.
    sched.alphas_cumprod = sde.alpha(t_cont).pow(2)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(steps)
    idx = sched.timesteps.to(torch.int64)
    grid = torch.cat([(idx.to(torch.float64) + 1) / n_train, torch.zeros(1, dtype=torch.float64)])
    model = gaussian_score(sde, LinearOp.scalar(0.3))
    x_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    sampler = _GridDDIM(grid, eta)
    noise = torch.randn(
        steps, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    draws = iter(noise)
    sampler.noise_source = lambda u: next(draws)
    ours = sampler.sample(model, sde, (4, 3), u_T=x_T, dtype=torch.float64).x

    x = x_T.clone()
    for i, ti in enumerate(idx):
        t = grid[i].expand(4)
        eps = model(x, t).eps()
        x = sched.step(eps, int(ti), x, eta=eta, variance_noise=noise[i]).prev_sample
    assert x.dtype == torch.float64
    err = (ours - x).abs().max().item()
    assert err < 1e-6, err
