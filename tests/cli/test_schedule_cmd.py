"""``diffkit schedule`` end to end (in process): the grid file it writes, samplers and training
runs that load it, the times a checkpoint keeps, and bad input (exit 2, the field named)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffkit.cli.main import main
from diffkit.gaussian import GaussianScore, Modes, data_cov, grf32_spectrum, propagate, w2_to_data
from diffkit.gaussian.spectra import compress, empirical_spectrum
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.vp import VPSDE

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "toy" / "gmm_vp_resnet.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_schedule_writes_a_grid_file_that_samplers_load(tmp_path, capsys) -> None:
    out = tmp_path / "grids" / "ddim4.json"
    argv = ["schedule", "--sampler", "ddim", "--steps", "4", "--spectrum", "grf32"]
    assert main([*argv, "--iterations", "15", "--out", str(out)]) == 0
    assert "grid file" in capsys.readouterr().out
    meta = json.loads(out.read_text())
    assert meta["grid"] == "optimized" and meta["steps"] == 4 and meta["nfe"] == 4
    assert meta["spectrum"] == "grf32" and meta["dimension"] == 3072
    assert meta["value"] < meta["initial_value"]
    # the written grid reproduces the reported W2 through the ordinary sampling path
    sde = VPSDE()
    lam, weights = compress(grf32_spectrum())
    sampler = DDIM(4, grid=str(out))
    assert sampler.times(sde).tolist() == meta["times"]
    modes = Modes(sde, (lam.numel(),))
    start = torch.ones(lam.numel(), 1, 1, dtype=torch.float64)
    cov, _ = propagate(sampler, sde, GaussianScore(sde, data_cov(sde, lam)), start, modes)
    assert float(w2_to_data(lam, cov, weights)) == pytest.approx(meta["value"], rel=1e-10)


def test_schedule_from_a_datamodule_and_a_spectrum_file(tmp_path, capsys) -> None:
    from diffkit.data.gmm import GaussianMixtureDataModule

    dm = GaussianMixtureDataModule(num_train=512, num_val=8, num_test=8, batch_size=64)
    lam = empirical_spectrum(dm)
    x = dm.split("train").x.double().numpy()[:512]  # the loader drops no full batch of 512
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    np.testing.assert_allclose(lam.numpy(), ref, rtol=1e-10)
    out = tmp_path / "gmm.json"
    data = ["--data", "gmm", "--data.num_train", "512", "--data.batch_size", "64"]
    common = ["schedule", "--sampler", "deis", "--sampler.order", "1", "--steps", "3"]
    assert main([*common, *data, "--iterations", "5", "--out", str(out)]) == 0
    assert "2 distinct eigenvalues for 3 steps" in capsys.readouterr().err  # 2-D data
    assert json.loads(out.read_text())["spectrum"] == "data:GaussianMixtureDataModule"
    np.save(tmp_path / "lam.npy", lam.numpy())
    spec = ["--spectrum", str(tmp_path / "lam.npy"), "--metric", "kl", "--init", "karras"]
    assert main([*common, *spec, "--iterations", "5", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metric"] == "kl"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "ddim", "--sampler.eta", "1"], r"--sampler \(DDIM\).*deterministic"),
        (["--sampler", "ddim", "--spectrum", "nope.npy"], r"--spectrum.*neither a built-in"),
        (["--sampler", "ddim", "--spectrum", "cifar10", "--data", "gmm"], r"exactly one"),
        (["--sampler", "ddim"], r"exactly one of --spectrum"),
        (["--sampler", "ddim", "--sampler.grid", "cubic"], r"model\.sampler\.grid.*'cubic'"),
        (["--sampler", "ddim", "--steps", "0"], r"--steps must be >= 1"),
    ],
)
def test_schedule_bad_input_exits_2_naming_the_field(tmp_path, capsys, args, message) -> None:
    argv = ["schedule", *args, "--out", str(tmp_path / "g.json")]
    if "--spectrum" not in args and "--data" not in args and "exactly one" not in message:
        argv += ["--spectrum", "grf32"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffkit: error: ") and "Traceback" not in err
    assert re.search(message, err), err


def _toy_config(tmp_path: Path, grid: str) -> Path:
    cfg = yaml.safe_load(TOY.read_text())
    cfg["model"]["denoiser"]["init_args"] = {"width": 16, "depth": 1, "emb_dim": 8}
    cfg["model"]["sampler"] = {"class_path": "ddim", "init_args": {"steps": 3, "grid": grid}}
    cfg["data"]["init_args"].update(num_train=64, num_val=32, batch_size=32)
    cfg["trainer"].update(max_epochs=1, logger=False, enable_model_summary=False)
    cfg["trainer"]["default_root_dir"] = str(tmp_path / "run")
    cfg["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True},
        }
    ]
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_training_run_records_the_grid_and_its_checkpoint_survives_a_moved_file(tmp_path) -> None:
    from diffkit.cli.sample_cmd import load_module
    from diffkit.sdes.time_grids import write_grid_file

    grid = tmp_path / "grid.json"
    times = torch.tensor([1.0, 0.3, 0.05, 1e-3], dtype=torch.float64)
    write_grid_file(grid, times, sampler="ddim")
    assert main(["fit", "-c", str(_toy_config(tmp_path, str(grid)))]) == 0
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    (config,) = (tmp_path / "run").rglob("config.yaml")
    assert yaml.safe_load(config.read_text())["model"]["sampler"]["init_args"]["grid"] == str(grid)
    hp = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hp["sampler"]["init_args"]["grid"] == times.tolist()
    grid.unlink()  # the file moves away: the checkpoint still samples on its grid
    module = load_module(ckpt)
    assert module.sampler.times(module.sde).tolist() == times.tolist()
    assert module.sample(4, generator=torch.Generator().manual_seed(0)).nfe == 3
    # diffkit sample --sampler.grid FILE
    other = write_grid_file(tmp_path / "other.json", torch.tensor([1.0, 0.1, 0.01, 2e-3]).double())
    out = tmp_path / "samples"
    sample = ["sample", str(ckpt), "--sampler", "ddim", "--sampler.steps", "3"]
    assert (
        main(
            [
                *sample,
                "--sampler.grid",
                str(other),
                "--num_samples",
                "8",
                "--output",
                str(out),
                "--metrics",
                "[]",
            ]
        )
        == 0
    )
    assert torch.load(out.with_suffix(".pt"), weights_only=True)["nfe"] == 3


def test_training_run_with_a_bad_grid_file_exits_2_naming_the_field(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"times": [1.0, 0.2, 0.5, 0.001]}))
    assert main(["fit", "-c", str(_toy_config(tmp_path, str(bad)))]) == 2
    err = capsys.readouterr().err
    assert "diffkit: error:" in err and "model.sampler.grid" in err and "strictly decreasing" in err
    late = tmp_path / "late.json"
    late.write_text(json.dumps({"times": [2.0, 0.2, 0.05, 0.001]}))
    assert main(["fit", "-c", str(_toy_config(tmp_path, str(late)))]) == 2
    assert "exceeds the SDE's T = 1" in capsys.readouterr().err
