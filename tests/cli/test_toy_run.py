"""The README's main job, shrunk: a real fit through ``diffkit fit`` with W&B offline, its
outputs, a checkpoint reloaded in a fresh process, and bit-exact repeatability."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffkit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "toy" / "gmm_vp_resnet.yaml"


def fast_config(tmp_path: Path, *, wandb: bool = True) -> Path:
    """The toy config with a tiny network, data and sampler (same structure as the README's)."""
    cfg = yaml.safe_load(TOY.read_text())
    cfg["model"]["denoiser"]["init_args"] = {"width": 16, "depth": 1, "emb_dim": 8}
    cfg["model"]["sampler"] = {"class_path": "ddim", "init_args": {"steps": 5}}
    cfg["data"]["init_args"].update(num_train=128, num_val=32, batch_size=32)
    cfg["trainer"].update(max_epochs=2, log_every_n_steps=1, enable_model_summary=False)
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"] == "scatter":
            cb["init_args"].update(every_n_epochs=1, num_samples=64)
    if not wandb:
        cfg["trainer"]["logger"] = False
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("toy")
    cfg = fast_config(tmp)
    code = main(["fit", "-c", str(cfg), f"--trainer.logger.init_args.save_dir={tmp / 'runs'}"])
    assert code == 0
    (run_dir,) = (tmp / "runs" / "wandb").glob("offline-run-*")
    return run_dir


@pytest.mark.slow
def test_toy_run_writes_checkpoint_config_and_plots_in_the_wandb_run(
    toy_run: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (toy_run / "checkpoints" / "last.ckpt").is_file()
    assert (toy_run / "scatter" / "final.png").stat().st_size > 1000
    assert (toy_run / "scatter" / "epoch=0001.png").is_file()
    assert list((toy_run / "files" / "media" / "images").glob("sample/scatter*.png"))
    text = (toy_run / "config.yaml").read_text()
    assert text.startswith("# diffkit ") and "# diffkit plugins in use: none" in text
    # the saved config re-parses to the same parts
    capsys.readouterr()
    assert main(["fit", "-c", str(toy_run / "config.yaml"), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    saved = yaml.safe_load(text)
    assert printed["model"] == saved["model"] and printed["data"] == saved["data"]
    assert printed["model"]["sampler"]["init_args"]["steps"] == 5
    ckpt = torch.load(toy_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8
    assert ckpt["hyper_parameters"]["sde"]["class_path"] == "diffkit.aliases.sdes.vp"
    assert ckpt["hyper_parameters"]["data_shape"] == (2,)


RELOAD = """
import sys, torch
from diffkit.module import DiffusionModule
torch.load(sys.argv[1], weights_only=True)
m = DiffusionModule.load_from_checkpoint(sys.argv[1], weights_only=True, map_location="cpu")
torch.save(m.sample(32, generator=torch.Generator().manual_seed(7)).x, sys.argv[2])
"""


@pytest.mark.slow
def test_checkpoint_reloads_in_a_fresh_process_with_identical_samples(
    toy_run: Path, tmp_path: Path
) -> None:
    from diffkit.module import DiffusionModule

    ckpt, out = toy_run / "checkpoints" / "last.ckpt", tmp_path / "x.pt"
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(ckpt), str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    here = DiffusionModule.load_from_checkpoint(ckpt, weights_only=True, map_location="cpu")
    expected = here.sample(32, generator=torch.Generator().manual_seed(7)).x
    assert torch.equal(torch.load(out, weights_only=True), expected)


@pytest.mark.slow
def test_two_identical_runs_are_bit_exact(tmp_path: Path) -> None:
    cfg = fast_config(tmp_path, wandb=False)
    states = []
    for name in ("a", "b"):
        args = ["fit", "-c", str(cfg), f"--trainer.default_root_dir={tmp_path / name}"]
        assert main(args) == 0
        (last,) = (tmp_path / name).rglob("last.ckpt")
        states.append(torch.load(last, weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    first_layer = next(k for k in states[0] if k.startswith("net.") and k.endswith("weight"))
    assert states[0][first_layer].abs().sum() > 0
