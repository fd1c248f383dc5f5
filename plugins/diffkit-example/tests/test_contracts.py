"""The plugin's parts through diffkit's public contract harnesses, as any third-party part would
be: the SDE (kernel vs Lyapunov ODE, semigroup, Monte Carlo, exact scores, pickling, dtype
policy) and the sampler (exactness and order on Gaussian data, NFE honesty, determinism)."""

from __future__ import annotations

from diffkit.testing.contracts import SamplerContract, SDEContract
from diffkit_example.samplers import AncestralSampler
from diffkit_example.sdes import SubVPSDE


class TestSubVPContract(SDEContract):
    make_sde = SubVPSDE
    data_shape = (3,)
    mc_paths = 10000
    mc_steps = 100


class TestSubVPImagesContract(SDEContract):
    make_sde = SubVPSDE
    data_shape = (1, 3, 3)
    mc_paths = 4000
    mc_steps = 100


class TestAncestralContract(SamplerContract):
    """First order in the output variance, on VP (the default) and on the plugin's sub-VP."""

    make_sampler = AncestralSampler
    order = 1


class TestAncestralOnSubVPContract(TestAncestralContract):
    make_sde = SubVPSDE
