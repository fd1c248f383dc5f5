"""The plugin's SDE through diffkit's public contract harness, as any third-party SDE would be:
kernel vs Lyapunov ODE, semigroup, Monte Carlo, exact scores, pickling and dtype policy."""

from __future__ import annotations

from diffkit.testing.contracts import SDEContract
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
