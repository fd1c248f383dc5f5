"""EMA callback: the recursion against a float64 reference, warm-up and adaptive decay, the
weights used during validation, and what the checkpoint holds."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from diffkit.callbacks.ema import EMA
from diffkit.data.toy2d import Toy2DDataModule


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in module.parameters()])


class Recorder(Callback):
    """Live weights after every optimizer step (runs before EMA: callbacks run in list order)."""

    def __init__(self, ema: EMA) -> None:
        self.ema, self.live, self.in_validation = ema, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.live.append(_flat(pl_module))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self.in_validation.append((len(self.live), _flat(self.ema.averaged_module())))


def reference_ema(live, decay, warmup, every, adaptive):
    ema, n = None, 0
    for k, w in enumerate(live):
        if k < warmup:
            ema = w.clone()
            continue
        if (k - warmup) % every:
            continue
        if ema is None:
            ema = w.clone()
            continue
        d = min(decay, (1 + n) / (10 + n)) if adaptive else decay
        ema = d * ema + (1 - d) * w
        n += 1
    return ema


@pytest.mark.parametrize(
    ("warmup", "every", "adaptive"), [(0, 1, False), (3, 2, False), (2, 1, True)]
)
def test_ema_follows_the_recursion_and_is_used_in_validation(
    tmp_path, make_module, make_trainer, warmup, every, adaptive
):
    ema = EMA(decay=0.8, warmup_steps=warmup, update_every=every, adaptive_decay=adaptive)
    rec = Recorder(ema)
    dm = Toy2DDataModule("moons", num_train=256, num_val=64, batch_size=32)
    module = make_module()
    tr = make_trainer(tmp_path, [rec, ema], max_epochs=2, enable_checkpointing=False)
    tr.fit(module, dm)
    assert len(rec.live) == 16
    want = reference_ema(rec.live, 0.8, warmup, every, adaptive)
    got = _flat(ema._average_model.module)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # The EMA differs from the live weights, and after fit the module holds the EMA weights.
    assert (want - rec.live[-1]).abs().max() > 1e-4
    torch.testing.assert_close(_flat(module), got, rtol=0, atol=0)
    # During validation (weights swapped into the module) averaged_module() is still the EMA.
    for steps, weights in rec.in_validation:
        if steps:
            ref = reference_ema(rec.live[:steps], 0.8, warmup, every, adaptive)
            torch.testing.assert_close(weights, ref, rtol=1e-5, atol=1e-6)


def test_checkpoint_holds_ema_and_live_weights_and_loads_weights_only(
    tmp_path, toy_config, fit_cli
):
    cli = fit_cli(tmp_path / "run", "--trainer.max_epochs=1", config=toy_config)
    ema = next(c for c in cli.trainer.callbacks if isinstance(c, EMA))
    path = cli.trainer.checkpoint_callback.last_model_path
    state = torch.load(path, weights_only=True)
    assert {"state_dict", "current_model_state", "averaging_state"} <= set(state)
    names = [n for n, _ in cli.model.named_parameters()]
    avg = {n: p for n, p in ema.averaged_module().named_parameters()}
    for n in names:  # the EMA weights are the checkpoint's state_dict, bit for bit
        assert torch.equal(state["state_dict"][n], avg[n])
    assert any(
        not torch.equal(state["state_dict"][n], state["current_model_state"][n]) for n in names
    )
    steps = cli.trainer.global_step
    assert steps == 14 and int(state["averaging_state"]["n_averaged"]) == steps - 3 + 1
    assert state["callbacks"]  # the EMA callback state (update step, decay) is saved too


def test_sampling_uses_the_ema_weights(tmp_path, make_module, make_trainer):
    ema = EMA(decay=0.5)
    dm = Toy2DDataModule("moons", num_train=128, num_val=32, batch_size=32)
    module = make_module()
    make_trainer(tmp_path, [ema], max_epochs=1, enable_checkpointing=False).fit(module, dm)
    assert module.sampling_module() is ema.averaged_module()
    with torch.no_grad():  # make the live weights differ from the EMA ones
        for p in module.parameters():
            p.add_(1.0)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = module.sample(16, generator=g()).x
    b = ema.averaged_module().sample(16, generator=g()).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(decay=1.0)
    with pytest.raises(ValueError, match="update_every"):
        EMA(update_every=0)
    assert isinstance(EMA(), L.Callback)
