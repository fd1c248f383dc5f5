"""A ``diffkit fit`` killed (SIGKILL) while it writes a checkpoint, and resuming after it.

Lightning serialises a checkpoint in memory, writes it to a temporary file in the system temp
directory and moves that file over the target name. ``ModelCheckpoint(save_last=True)`` saves
``epoch=N-step=S.ckpt`` first and ``last.ckpt`` second. The subprocess below is killed halfway
through the bytes of one of those writes (a patched ``fsspec`` writer); the test records what is
left on disk and resumes from ``last.ckpt`` as the README says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Runs ``diffkit fit``; the ``KILL_AT``-th write to a file named ``KILL_NAME*`` writes half of
# its bytes and then the process SIGKILLs itself.
KILLER = """
import os, signal, sys
from fsspec.implementations.local import LocalFileOpener
name, at = os.environ["KILL_NAME"], int(os.environ["KILL_AT"])
calls = [0]
write = LocalFileOpener.write
def killing_write(self, data):
    if os.path.basename(str(self.path)).startswith(name):
        calls[0] += 1
        if calls[0] == at:
            write(self, data[: len(data) // 2])
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return write(self, data)
LocalFileOpener.write = killing_write
from diffkit.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"])


@pytest.fixture
def config(tiny_fit_yaml) -> str:
    """A tiny fit of 50 epochs that keeps every epoch's checkpoint besides ``last.ckpt``."""
    return tiny_fit_yaml(
        steps=4,
        sizes=(256, 64, 64, 128),
        max_epochs=50,
        checkpoint="{save_last: true, save_top_k: -1}",
    )


def _killed_run(tmp_path: Path, config: str, name: str, at: int) -> tuple[Path, Path]:
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(config)
    run, systmp = tmp_path / "run", tmp_path / "systmp"
    systmp.mkdir()
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(systmp),
        "KILL_NAME": name,
        "KILL_AT": str(at),
    }
    cmd = [sys.executable, "-c", KILLER, "fit", "-c", str(cfg), f"--trainer.default_root_dir={run}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    return run / "checkpoints", systmp


@pytest.mark.slow
def test_kill_while_writing_last_leaves_it_one_save_behind_and_resume_takes_the_newest(
    tmp_path, config, capsys
):
    ckpts, systmp = _killed_run(tmp_path, config, "last", at=3)  # the third epoch's last.ckpt
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == [
        "epoch=0-step=2.ckpt",
        "epoch=1-step=4.ckpt",
        "epoch=2-step=6.ckpt",
        "last.ckpt",
    ]
    # Not truncated: last.ckpt is the previous save, intact and verified, one epoch behind.
    from diffkit.checkpoint import read_checkpoint

    last = read_checkpoint(ckpts / "last.ckpt")
    assert last["global_step"] == 4 == _step(ckpts / "epoch=1-step=4.ckpt")
    assert _step(ckpts / "epoch=2-step=6.ckpt") == 6
    # The half-written bytes went to a temporary file that nobody removes.
    (orphan,) = list(systmp.iterdir())
    assert 0 < orphan.stat().st_size < (ckpts / "epoch=2-step=6.ckpt").stat().st_size

    # A run directory, or a damaged last.ckpt, resolves to the newest intact checkpoint too.
    from diffkit.checkpoint import resolve_resume

    for given in (tmp_path / "run", ckpts):
        chosen, note = resolve_resume(given)
        assert chosen.name == "epoch=2-step=6.ckpt" and "newest intact" in note
    damaged = tmp_path / "copy" / "last.ckpt"
    damaged.parent.mkdir()
    for p in ckpts.iterdir():
        (damaged.parent / p.name).write_bytes(p.read_bytes())
    damaged.write_bytes(damaged.read_bytes()[:1000])
    (damaged.parent / "epoch=2-step=6.ckpt").write_bytes(b"")  # the newest is damaged as well
    chosen, note = resolve_resume(damaged)
    assert chosen.name == "epoch=1-step=4.ckpt" and "last.ckpt is damaged" in note

    # Resuming from last.ckpt resumes from the newest intact checkpoint, and says so.
    from diffkit.cli.main import main

    resumed = tmp_path / "resumed"
    argv = ["fit", "-c", str(tmp_path / "fit.yaml"), f"--trainer.default_root_dir={resumed}"]
    with pytest.warns(
        UserWarning, match=r"last\.ckpt \(step 4\) is older.*epoch=2-step=6\.ckpt \(step 6\)"
    ):
        code = main([*argv, "--trainer.max_epochs=4", f"--ckpt_path={ckpts / 'last.ckpt'}"])
    assert code == 0
    # Epoch 2 was not trained again: the resumed run's first save is epoch 3.
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == [
        "epoch=3-step=8.ckpt",
        "last.ckpt",
    ]


@pytest.mark.slow
def test_kill_while_writing_an_epoch_checkpoint_leaves_the_previous_pair(tmp_path, config):
    ckpts, systmp = _killed_run(tmp_path, config, "epoch=", at=3)
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"]
    assert _step(ckpts / "last.ckpt") == 4
    assert len(list(systmp.iterdir())) == 1
