"""DiffusionModule: shapes handed to the denoiser, early compatibility errors, seeded steps,
sampling, and the non-finite-loss guard (through a real Trainer)."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from diffkit.data.gmm import GaussianMixtureDataModule, TensorDictDataset, collate_dict
from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.module import DiffusionModule, step_generator
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.vp import VPSDE

TINY = functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8)


def make(**kwargs) -> DiffusionModule:
    args = {"sde": VPSDE(), "denoiser": TINY, "loss": DenoisingScoreMatching(), "sampler": DDIM(5)}
    return DiffusionModule(**{**args, **kwargs})


def test_step_generators_depend_on_seed_rank_step_and_stream() -> None:
    def draw(*args, **kw) -> torch.Tensor:
        return torch.randn(4, generator=step_generator(*args, **kw))

    assert torch.equal(draw(0, 0, 5), draw(0, 0, 5))
    base = draw(0, 0, 5)
    for other in (draw(1, 0, 5), draw(0, 1, 5), draw(0, 0, 6), draw(0, 0, 5, stream=1)):
        assert not torch.equal(base, other)


def test_denoiser_gets_the_spec_from_sde_and_loss() -> None:
    m = make(data_shape=(3,), num_classes=4)
    assert m.spec == DenoiserSpec(
        data_shape=(3,), state_shape=(3,), output_shape=(3,), num_classes=4
    )
    assert m.net.spec is m.spec and m.model.net is m.net and m.model.target == "eps"


def test_velocity_loss_gives_velocity_output_shape() -> None:
    from diffkit.losses.hsm import HybridScoreMatching
    from diffkit.sdes.cld import CLDSDE

    m = make(sde=CLDSDE(), loss=HybridScoreMatching(), sampler=None, data_shape=(2,))
    assert m.spec.state_shape == (2, 2) and m.spec.output_shape == (2,)
    assert m.model.velocity_only and not m.model.mixed_score
    # The loss's parameterisation options reach the score model.
    mixed = make(
        sde=CLDSDE(), loss=HybridScoreMatching(mixed_score=True), sampler=None, data_shape=(2,)
    )
    assert mixed.model.mixed_score
    edm = make(loss=DenoisingScoreMatching(target="x0", preconditioning="edm", sigma_data=0.3))
    assert edm.model.sigma_data == 0.3 and edm.model.preconditioning == "edm"


def test_incompatible_parts_fail_at_construction_naming_the_part() -> None:
    class NeedsCLD(DenoisingScoreMatching):
        def check_sde(self, sde) -> None:
            raise ValueError("needs a CLD SDE; use sde: cld")

    with pytest.raises(ValueError, match=r"model\.loss \(NeedsCLD\).*use sde: cld"):
        make(loss=NeedsCLD())
    with pytest.raises(ValueError, match="data_shape"):
        make(data_shape=(0,))


def test_training_loss_is_finite_differentiable_and_seeded() -> None:
    m = make()
    batch = {"x": GaussianMixtureDataModule().reference_samples(32)}
    loss = m.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.net.parameters())
    # same (seed, rank, step): same noise and times, so the same loss
    assert torch.equal(m.training_step(batch, 0).detach(), loss.detach())
    other = make(seed=1)
    other.load_state_dict(m.state_dict())
    assert not torch.equal(other.training_step(batch, 0).detach(), loss.detach())


def test_sample_is_seeded_and_restores_training_mode() -> None:
    m = make()
    m.train()
    a = m.sample(16, generator=torch.Generator().manual_seed(3))
    b = m.sample(16, generator=torch.Generator().manual_seed(3))
    assert a.x.shape == (16, 2) and a.nfe == 5 and m.training
    assert torch.equal(a.x, b.x)
    u_T = torch.zeros(16, 2)
    c = m.sample(16, u_T=u_T, sampler=DDIM(3))
    assert c.nfe == 3 and torch.isfinite(c.x).all()


def test_non_finite_loss_stops_naming_step_batch_and_times(tmp_path: Path) -> None:
    x = GaussianMixtureDataModule().reference_samples(12)
    x[8] = float("nan")  # batch index 2 with batch size 4
    loader = DataLoader(TensorDictDataset(x), batch_size=4, collate_fn=collate_dict)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with pytest.raises(FloatingPointError) as info:
        trainer.fit(make(), train_dataloaders=loader)
    message = str(info.value)
    assert "global step 2" in message and "batch index 2" in message and "t in [" in message
    assert trainer.global_step == 2
    saved = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert saved and all("step=3" not in name for name in saved), saved


def test_deep_copies_share_the_optimizer_factory() -> None:
    import copy

    m = make(optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    c = copy.deepcopy(m)
    assert c.optimizer_factory is m.optimizer_factory
    assert c.net is not m.net
    assert all(torch.equal(a, b) for a, b in zip(c.parameters(), m.parameters(), strict=True))


def test_sampling_uses_the_ema_weights_when_an_ema_callback_is_present() -> None:
    from diffkit.callbacks.ema import EMA

    dm = GaussianMixtureDataModule(num_train=64, num_val=16, batch_size=16)
    ema = EMA(decay=0.5)
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        callbacks=[ema],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    m = make()
    trainer.fit(m, dm)
    averaged = ema.averaged_module()
    assert averaged is not None and m.sampling_module() is averaged
    g = functools.partial(torch.Generator().manual_seed, 0)
    via_module = m.sample(8, generator=g()).x
    direct = DDIM(5).sample(averaged.model, averaged.sde, (8, 2), generator=g()).x
    assert torch.equal(via_module, direct)
