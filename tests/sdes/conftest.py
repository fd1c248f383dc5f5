"""SDE factories shared by the SDE tests: every built-in configuration, on tiny data shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from diffkit.sdes.base import LinearSDE
from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.ve import VESDE
from diffkit.sdes.vp import VPSDE

# name -> (factory, tiny data shape, coefficient breakpoints)
SDE_CASES: dict[str, tuple[Callable[[], LinearSDE], tuple[int, ...], tuple[float, ...]]] = {
    "vp_linear": (VPSDE, (3,), ()),
    "vp_cosine": (lambda: VPSDE(schedule="cosine"), (3,), ()),
    "vp_ddpm": (
        lambda: VPSDE(schedule="ddpm", num_steps=5, beta_max=2.0),
        (3,),
        tuple(i / 5 for i in range(1, 5)),
    ),
    "ve_geometric": (VESDE, (3,), ()),
    "ve_score_sde": (lambda: VESDE(exact_kernel=False), (3,), ()),
    "ve_edm": (lambda: VESDE("edm"), (3,), ()),
    "blur_hoogeboom": (lambda: BlurSDE((4, 4)), (1, 4, 4), ()),
    "blur_gddim": (lambda: BlurSDE((4, 5), schedule="gddim", sigma_b_max=3.0), (1, 4, 5), ()),
    "cld_hsm": (lambda: CLDSDE(numerical_eps=0.0), (3,), ()),
    "cld_dsm": (lambda: CLDSDE(kernel="dsm", numerical_eps=0.0), (3,), ()),
    "cld_large_beta": (lambda: CLDSDE(beta0=30.0, numerical_eps=0.0), (3,), ()),
    "cld_eps": (lambda: CLDSDE(numerical_eps=1e-6), (3,), ()),
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
