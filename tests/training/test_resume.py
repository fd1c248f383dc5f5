"""Reliability: bit-exact resume (also after SIGKILL), the non-finite-loss guard, gradient
clipping and bf16 mixed precision through Lightning's flags."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from diffkit.data.base import DiffusionDataModule
from diffkit.data.gmm import TensorDictDataset, collate_dict
from diffkit.data.toy2d import sample_toy2d


def _ckpt_dir(cli) -> Path:
    return Path(cli.trainer.checkpoint_callback.dirpath)


def assert_same_training_state(a: dict, b: dict) -> None:
    """Weights, EMA, optimizer, scheduler, loop counters and callback states are identical."""
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}[{name}] differs"
    oa, ob = a["optimizer_states"][0], b["optimizer_states"][0]
    assert oa["param_groups"] == ob["param_groups"]
    for pid, st in oa["state"].items():
        for k, v in st.items():
            assert torch.equal(v, ob["state"][pid][k]), f"optimizer state {pid}.{k} differs"
    assert a["lr_schedulers"] == b["lr_schedulers"]
    ema_a = next(v for k, v in a["callbacks"].items() if k.startswith("EMA"))
    ema_b = next(v for k, v in b["callbacks"].items() if k.startswith("EMA"))
    assert ema_a == ema_b


def test_resume_is_bit_exact(tmp_path, toy_config, fit_cli):
    """4 epochs straight == 2 epochs, stop, resume to 4 (digits, random flips, EMA with warm-up,
    AdamW + StepLR, validation with swapped EMA weights)."""
    straight = fit_cli(tmp_path / "straight", config=toy_config)
    half = fit_cli(tmp_path / "half", "--trainer.max_epochs=2", config=toy_config)
    ckpt = _ckpt_dir(half) / "epoch=1.ckpt"
    resumed = fit_cli(tmp_path / "resumed", f"--ckpt_path={ckpt}", config=toy_config)
    assert resumed.trainer.global_step == straight.trainer.global_step == 56
    a = torch.load(_ckpt_dir(straight) / "epoch=3.ckpt", weights_only=True)
    b = torch.load(_ckpt_dir(resumed) / "epoch=3.ckpt", weights_only=True)
    assert_same_training_state(a, b)
    # Not vacuous: the second half changed the weights.
    c = torch.load(ckpt, weights_only=True)
    assert any(not torch.equal(c["state_dict"][k], a["state_dict"][k]) for k in a["state_dict"])


def _loads(path: Path) -> dict | None:
    try:
        return torch.load(path, weights_only=True)
    except Exception:
        return None


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_reaches_identical_state(
    tmp_path, toy_config, fit_cli
):
    run = tmp_path / "killed"
    # Same intra-op thread count as this process (the straight run below): float sums are
    # partitioned by thread, so bit-exactness needs equal thread counts.
    threads = str(torch.get_num_threads())
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    cmd = [
        sys.executable,
        "-m",
        "diffkit",
        "fit",
        "-c",
        str(toy_config),
        f"--trainer.default_root_dir={run}",
        "--trainer.max_epochs=1000",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "epoch=1.ckpt").exists():
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-3000:])
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The newest checkpoint may be half-written: resume from the newest complete one.
    epochs = sorted(
        int(m.group(1))
        for p in (run / "checkpoints").glob("epoch=*.ckpt")
        if (m := re.match(r"epoch=(\d+)\.ckpt", p.name))
    )
    assert epochs[-1] < 999, "the run finished before it was killed"
    last = next(e for e in reversed(epochs) if _loads(run / "checkpoints" / f"epoch={e}.ckpt"))
    target = last + 2
    resumed = fit_cli(
        tmp_path / "resumed",
        f"--trainer.max_epochs={target}",
        f"--ckpt_path={run / 'checkpoints' / f'epoch={last}.ckpt'}",
        config=toy_config,
    )
    straight = fit_cli(tmp_path / "straight", f"--trainer.max_epochs={target}", config=toy_config)
    a = torch.load(_ckpt_dir(straight) / f"epoch={target - 1}.ckpt", weights_only=True)
    b = torch.load(_ckpt_dir(resumed) / f"epoch={target - 1}.ckpt", weights_only=True)
    assert_same_training_state(a, b)


class PoisonedMoons(DiffusionDataModule):
    """Moons whose batch ``bad_batch`` of epoch >= ``bad_epoch`` contains a NaN."""

    def __init__(self, bad_epoch: int, bad_batch: int, batch_size: int = 32) -> None:
        super().__init__()
        self.bad_epoch, self.bad_batch, self.batch_size = bad_epoch, bad_batch, batch_size
        self.data_shape = (2,)
        self.x = sample_toy2d("moons", 256, 0.05, torch.Generator().manual_seed(0)).float()

    def train_dataloader(self) -> DataLoader:
        x = self.x.clone()
        if self.trainer.current_epoch >= self.bad_epoch:
            x[self.bad_batch * self.batch_size + 5, 1] = float("nan")
        return DataLoader(TensorDictDataset(x), batch_size=self.batch_size, collate_fn=collate_dict)


def test_non_finite_loss_stops_with_step_batch_and_t_range_and_keeps_good_checkpoint(
    tmp_path, make_module, make_trainer
):
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, save_last=True
    )
    dm = PoisonedMoons(bad_epoch=1, bad_batch=3)
    tr = make_trainer(tmp_path, [ckpt], max_epochs=3, reload_dataloaders_every_n_epochs=1)
    module = make_module()
    with pytest.raises(FloatingPointError) as info:
        tr.fit(module, dm)
    msg = str(info.value)
    assert "global step 11" in msg and "batch index 3" in msg, msg  # 8 steps per epoch
    lo, hi = map(float, re.search(r"t in \[([^,]+), ([^\]]+)\]", msg).groups())
    assert module.sde.t_min <= lo <= hi <= module.sde.T
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["epoch=0.ckpt", "last.ckpt"]
    # weights_only=False: built outside the CLI, its hparams are objects (the CLI tests use True)
    good = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert good["global_step"] == 8
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values())


class _TwoRanks:
    """A strategy stand-in whose all_gather adds rank 1's row ``(flag, loss, t_min, t_max)``."""

    def __init__(self, rank1_row: list[float]) -> None:
        self.rank1_row = torch.tensor(rank1_row, dtype=torch.float64)

    def all_gather(self, row: torch.Tensor) -> torch.Tensor:
        return torch.stack([row, self.rank1_row])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_on_rank_1_is_reported_by_rank_0_with_rank_1s_value(make_module, bad):
    from types import SimpleNamespace

    from diffkit.module import first_non_finite

    module = make_module()
    module._trainer = SimpleNamespace(
        world_size=2, global_rank=0, global_step=11, strategy=_TwoRanks([1.0, bad, 0.25, 0.75])
    )
    finite = torch.tensor(0.5)  # rank 0's own loss
    with pytest.raises(FloatingPointError) as info:
        module._raise_if_not_finite(finite, torch.tensor([0.1, 0.9], dtype=torch.float64), 3)
    msg = str(info.value)
    assert f"non-finite training loss ({bad}) on rank 1 at global step 11" in msg, msg
    assert "t in [0.25, 0.75]" in msg and "raised on rank 0" in msg and "0.5" not in msg
    # every loss finite: nothing raised, nothing found
    module._trainer.strategy = _TwoRanks([0.0, 0.7, 0.1, 0.2])
    module._raise_if_not_finite(finite, torch.tensor([0.1, 0.9], dtype=torch.float64), 3)
    rows = torch.tensor([[0.0, 0.5, 0.1, 0.9], [1.0, bad, 0.2, 0.3], [1.0, bad, 0.4, 0.5]])
    assert first_non_finite(rows)[0] == 1 and first_non_finite(rows[:1]) is None


class StepRecorder(Callback):
    def __init__(self) -> None:
        self.params = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params.append(torch.cat([p.detach().flatten() for p in pl_module.parameters()]))


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_gradient_clipping_by_norm_bounds_each_sgd_step(tmp_path, make_module, make_trainer, clip):
    import functools

    rec = StepRecorder()
    module = make_module(optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    dm = PoisonedMoons(bad_epoch=99, bad_batch=0)
    rec.params.append(torch.cat([p.detach().flatten().clone() for p in module.parameters()]))
    tr = make_trainer(
        tmp_path,
        [rec],
        max_epochs=1,
        limit_train_batches=3,
        gradient_clip_val=clip,
        gradient_clip_algorithm="norm",
        enable_checkpointing=False,
    )
    tr.fit(module, dm)
    steps = torch.stack([(b - a).norm() for a, b in zip(rec.params, rec.params[1:], strict=False)])
    if clip is None:  # plain SGD takes steps far above lr * clip
        assert steps.max() > 10 * 0.1 * 1e-3
    else:  # ||lr * g_clipped|| <= lr * clip
        assert steps.max() <= 0.1 * 1e-3 * (1 + 1e-4)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, make_module, make_trainer):
    module = make_module()
    before = [p.detach().clone() for p in module.parameters()]
    dm = PoisonedMoons(bad_epoch=99, bad_batch=0)
    tr = make_trainer(
        tmp_path,
        [],
        max_epochs=1,
        precision="bf16-mixed",
        enable_checkpointing=False,
        limit_train_batches=4,
    )
    tr.fit(module, dm)
    assert tr.global_step == 4
    assert torch.isfinite(tr.callback_metrics["train/loss_epoch"])
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters(), strict=True))
