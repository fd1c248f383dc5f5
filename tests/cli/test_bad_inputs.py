"""Every bad input is answered at the CLI boundary: exit status 2, one message naming the field,
file or value, no traceback; ``--traceback`` shows it; good inputs at the edges still run.

The table runs through the real entry point, ``diffkit.cli.main.main``, in-process. Paths in
the rows are templates: ``{tiny}`` a small fit config, ``{ckpt}`` a checkpoint it trained,
``{tmp}`` a directory holding the files below.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffkit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "configs" / "toy" / "gmm_vp_resnet.yaml"
DIGITS = ROOT / "configs" / "digits" / "vp_unet.yaml"
HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


def _tiny_config(tmp: Path) -> Path:
    """The toy config with a tiny network and data, 2 steps, no logger."""
    cfg = yaml.safe_load(TOY.read_text())
    cfg["model"]["denoiser"]["init_args"] = {"width": 8, "depth": 1, "emb_dim": 8}
    cfg["model"]["sampler"] = {"class_path": "ddim", "init_args": {"steps": 3}}
    cfg["data"]["init_args"].update(num_train=64, num_val=16, num_test=16, batch_size=16)
    cfg["trainer"].update(max_steps=2, max_epochs=None, logger=False)
    cfg["trainer"].update(enable_model_summary=False, default_root_dir=str(tmp / "default"))
    cfg["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True},
        }
    ]
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    tiny = _tiny_config(tmp)
    assert main(["fit", "-c", str(tiny), f"--trainer.default_root_dir={tmp / 'run'}"]) == 0
    (ckpt,) = (tmp / "run").rglob("last.ckpt")
    (tmp / "afile").write_text("not a directory\n")
    (tmp / "adir.pt").mkdir()
    (tmp / "adir.json").mkdir()
    (tmp / "bad.yaml").write_text("model:\n  sde: vp\n   denoiser: [\n")
    (tmp / "tab.yaml").write_text("model:\n\tsde: vp\n")
    (tmp / "empty.yaml").write_text("")
    (tmp / "list.yaml").write_text("- model\n- data\n")
    (tmp / "scalar.yaml").write_text("just some words\n")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01binary")
    checkpoint_into_file = yaml.safe_load(tiny.read_text())
    checkpoint_into_file["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp / "afile")
    (tmp / "ckpt_dirpath.yaml").write_text(yaml.safe_dump(checkpoint_into_file))
    torch.save({"y": 1}, tmp / "no_samples.pt")
    torch.save({"x": torch.zeros(8, 3)}, tmp / "three_d.pt")
    return {"tiny": str(tiny), "ckpt": str(ckpt), "tmp": str(tmp), "toy": str(TOY)}


FIT = ["fit", "-c", "{tiny}"]
SAMPLE = ["sample", "{ckpt}", "--output", "{tmp}/samples/s"]
EVALUATE = ["evaluate", "{ckpt}", "--metrics", "[w2]", "--num_samples", "8"]
NO_GPU = pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")


def case(what: str, argv: list[str], *named: str, marks: object = ()) -> object:
    """One row: what is wrong, the arguments, the texts the message must contain."""
    return pytest.param(argv, list(named), id=what, marks=marks)


CASES = [
    # --- numbers: non-finite
    case(
        "lr-nan",
        [*FIT, "--model.optimizer.init_args.lr=nan"],
        "model.optimizer.lr",
        "'nan'",
        "finite",
    ),
    case("lr-inf", [*FIT, "--model.optimizer.init_args.lr=inf"], "model.optimizer.lr", "'inf'"),
    case(
        "lr-minus-inf",
        [*FIT, "--model.optimizer.init_args.lr=-inf"],
        "model.optimizer.lr",
        "'-inf'",
    ),
    case(
        "beta-max-inf", [*FIT, "--model.sde.init_args.beta_max=inf"], "model.sde.beta_max", "finite"
    ),
    case(
        "beta-max-nan", [*FIT, "--model.sde.init_args.beta_max=nan"], "model.sde.beta_max", "finite"
    ),
    case(
        "beta-max-yaml-nan",
        [*FIT, "--model.sde.init_args.beta_max=.nan"],
        "model.sde.init_args.beta_max",
        "finite",
    ),
    case(
        "beta-min-yaml-inf",
        [*FIT, "--model.sde.init_args.beta_min=-.inf"],
        "model.sde.init_args.beta_min",
        "finite",
    ),
    case(
        "clip-nan", [*FIT, "--trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val", "finite"
    ),
    case(
        "t-max-nan", [*FIT, "--model.sampler.init_args.t_max=nan"], "model.sampler.t_max", "finite"
    ),
    case("data-std-inf", [*FIT, "--data.init_args.std=inf"], "data.std", "finite"),
    # --- numbers: ranges
    case(
        "lr-negative",
        [*FIT, "--model.optimizer.init_args.lr=-1"],
        "model.optimizer",
        "learning rate: -1",
    ),
    case(
        "adam-beta",
        [*FIT, "--model.optimizer.init_args.betas=[1.5,0.9]"],
        "model.optimizer",
        "beta",
        "1.5",
    ),
    case(
        "weight-decay",
        [*FIT, "--model.optimizer.init_args.weight_decay=-1"],
        "model.optimizer",
        "weight_decay",
    ),
    case("max-steps-negative", [*FIT, "--trainer.max_steps=-5"], "max_steps", "-5"),
    case("max-epochs-negative", [*FIT, "--trainer.max_epochs=-2"], "max_epochs", "-2"),
    case("limit-batches", [*FIT, "--trainer.limit_train_batches=-1"], "limit_train_batches", "-1"),
    case("devices-0", [*FIT, "--trainer.devices=0"], "devices", "'0'"),
    case(
        "sampler-steps-0",
        [*FIT, "--model.sampler.init_args.steps=0"],
        "model.sampler",
        "steps must be >= 1, got 0",
    ),
    case(
        "sampler-steps-negative",
        [*FIT, "--model.sampler.init_args.steps=-3"],
        "model.sampler",
        "got -3",
    ),
    case(
        "sampler-t-min-negative",
        [*FIT, "--model.sampler.init_args.t_min=-1"],
        "model.sampler",
        "t_min=-1",
    ),
    case(
        "sampler-t-max-beyond-T",
        [*FIT, "--model.sampler.init_args.t_max=5"],
        "model.sampler",
        "t_max=5",
    ),
    case("sampler-grid", [*FIT, "--model.sampler.init_args.grid=foo"], "grid", "foo"),
    case(
        "width-0", [*FIT, "--model.denoiser.init_args.width=0"], "model.denoiser", "width", "got 0"
    ),
    case(
        "depth-negative",
        [*FIT, "--model.denoiser.init_args.depth=-1"],
        "model.denoiser",
        "depth",
        "-1",
    ),
    case("width-float", [*FIT, "--model.denoiser.init_args.width=1e6"], "width", "1000000.0"),
    case("fit-threads-0", [*FIT, "--num_threads=0"], "num_threads", "got 0"),
    case("fit-threads-negative", [*FIT, "--num_threads=-2"], "num_threads", "got -2"),
    case("batch-0", [*FIT, "--data.init_args.batch_size=0"], "batch_size must be >= 1, got 0"),
    case("num-train-0", [*FIT, "--data.init_args.num_train=0"], "num_train must be >= 1, got 0"),
    case("data-std-negative", [*FIT, "--data.init_args.std=-1"], "std", "-1"),
    case("data-preset", [*FIT, "--data.init_args.preset=foo"], "preset", "foo"),
    case("data-dim", [*FIT, "--data.init_args.dim=3"], "dim=2, got dim=3"),
    case("seed-text", [*FIT, "--seed_everything=abc"], "seed_everything", "abc"),
    # --- a batch larger than the dataset (before: exit 0, nothing trained)
    case(
        "batch-larger-than-data",
        [*FIT, "--data.init_args.batch_size=1000"],
        "data.init_args.batch_size=1000",
        "64 training samples",
        "<= 64",
    ),
    case("batch-one-too-large", [*FIT, "--data.init_args.batch_size=65"], "batch_size=65", "<= 64"),
    # --- sizes that cannot fit in memory
    case(
        "sampler-plan-memory",
        [*FIT, "--model.sampler.init_args.steps=10000000000"],
        "model.sampler",
        "steps=10000000000",
        "fewer steps",
    ),
    case(
        "network-memory",
        [*FIT, "--model.denoiser.init_args.width=1000000"],
        "model.denoiser",
        "parameters",
        "TB",
        "smaller",
    ),
    case(
        "network-memory-wide-and-deep",
        [*FIT, "--model.denoiser.init_args.depth=3", "--model.denoiser.init_args.width=300000"],
        "model.denoiser",
        "parameters",
        "smaller",
    ),
    # --- environment
    case(
        "accelerator-gpu",
        [*FIT, "--trainer.accelerator=gpu"],
        "trainer.accelerator=gpu",
        "no GPU",
        "cpu",
        marks=NO_GPU,
    ),
    case(
        "accelerator-cuda",
        [*FIT, "--trainer.accelerator=cuda"],
        "trainer.accelerator=cuda",
        "no GPU",
        marks=NO_GPU,
    ),
    case(
        "accelerator-mps",
        [*FIT, "--trainer.accelerator=mps"],
        "trainer.accelerator=mps",
        marks=pytest.mark.skipif(HAS_MPS, reason="MPS present"),
    ),
    case("strategy", [*FIT, "--trainer.strategy=foo"], "strategy='foo'"),
    case("precision", [*FIT, "--trainer.precision=foo"], "precision", "foo"),
    # --- output locations
    case(
        "root-dir-is-file",
        [*FIT, "--trainer.default_root_dir={tmp}/afile"],
        "trainer.default_root_dir",
        "{tmp}/afile",
        "is a file",
    ),
    case(
        "root-dir-under-file",
        [*FIT, "--trainer.default_root_dir={tmp}/afile/run"],
        "trainer.default_root_dir",
        "{tmp}/afile' is a file",
    ),
    case(
        "wandb-save-dir-is-file",
        ["fit", "-c", "{toy}", "--trainer.logger.init_args.save_dir={tmp}/afile"],
        "save_dir",
        "{tmp}/afile",
        "is a file",
    ),
    case(
        "wandb-save-dir-under-file",
        ["fit", "-c", "{toy}", "--trainer.logger.init_args.save_dir={tmp}/afile/wandb"],
        "save_dir",
        "{tmp}/afile' is a file",
    ),
    case(
        "checkpoint-dirpath-is-file",
        ["fit", "-c", "{tmp}/ckpt_dirpath.yaml"],
        "trainer.callbacks[0].init_args.dirpath",
        "is a file",
    ),
    # --- config files
    case("yaml-malformed", ["fit", "-c", "{tmp}/bad.yaml"], "{tmp}/bad.yaml', line 3"),
    case("yaml-tabs", ["fit", "-c", "{tmp}/tab.yaml"], "{tmp}/tab.yaml', line 2", "tabs"),
    case("yaml-empty", ["fit", "-c", "{tmp}/empty.yaml"], "{tmp}/empty.yaml' is empty"),
    case("yaml-list", ["fit", "-c", "{tmp}/list.yaml"], "{tmp}/list.yaml' holds a list"),
    case("yaml-scalar", ["fit", "-c", "{tmp}/scalar.yaml"], "{tmp}/scalar.yaml' holds a str"),
    case(
        "yaml-binary", ["fit", "-c", "{tmp}/binary.yaml"], "{tmp}/binary.yaml' is not a text file"
    ),
    case(
        "config-missing", ["fit", "-c", "{tmp}/missing.yaml"], "{tmp}/missing.yaml' does not exist"
    ),
    case("config-is-directory", ["fit", "--config={tmp}"], "'{tmp}' is a directory"),
    case("unknown-sde", [*FIT, "--model.sde=vpp"], "Unknown sde 'vpp'", "Did you mean 'vp'"),
    case("unknown-option", [*FIT, "--model.denoiser.widht=3"], "widht"),
    # --- diffkit sample
    case("sample-device-foo", [*SAMPLE, "--device", "foo"], "--device 'foo'", "cpu"),
    case(
        "sample-device-cuda",
        [*SAMPLE, "--device", "cuda"],
        "--device 'cuda'",
        "no CUDA",
        marks=NO_GPU,
    ),
    case("sample-device-meta", [*SAMPLE, "--device", "meta"], "--device 'meta'"),
    case(
        "sample-output-under-file",
        ["sample", "{ckpt}", "--output", "{tmp}/afile/s"],
        "--output",
        "{tmp}/afile' is a file",
    ),
    case(
        "sample-output-is-directory",
        ["sample", "{ckpt}", "--output", "{tmp}/adir"],
        "--output",
        "{tmp}/adir.pt' is a directory",
    ),
    case("sample-num-samples-0", [*SAMPLE, "--num_samples", "0"], "--num_samples", "got 0"),
    case(
        "sample-num-samples-negative", [*SAMPLE, "--num_samples", "-5"], "--num_samples", "got -5"
    ),
    case("sample-batch-0", [*SAMPLE, "--batch_size", "0"], "--batch_size", "got 0"),
    case("sample-nrow-0", [*SAMPLE, "--nrow", "0"], "--nrow", "got 0"),
    case("sample-threads-0", [*SAMPLE, "--num_threads", "0"], "--num_threads", "got 0"),
    case(
        "sample-steps-0",
        [*SAMPLE, "--sampler", "ddim", "--sampler.steps", "0"],
        "steps must be >= 1, got 0",
    ),
    case(
        "sample-t-min",
        [*SAMPLE, "--sampler", "ddim", "--sampler.t_min", "-1"],
        "--sampler",
        "t_min=-1",
    ),
    case(
        "sample-plan-memory",
        [*SAMPLE, "--sampler", "ddim", "--sampler.steps", "10000000000"],
        "--sampler",
        "steps=10000000000",
        "fewer steps",
    ),
    case(
        "sample-output-memory", [*SAMPLE, "--num_samples", "1000000000000"], "--num_samples", "TB"
    ),
    case("sample-unknown-sampler", [*SAMPLE, "--sampler", "ddimm"], "Unknown sampler 'ddimm'"),
    case("sample-unknown-metric", [*SAMPLE, "--metrics", "[w3]"], "Unknown metric 'w3'"),
    case("sample-missing-checkpoint", ["sample", "{tmp}/missing.ckpt"], "{tmp}/missing.ckpt"),
    case(
        "sample-class-label-unconditional",
        [*SAMPLE, "--class_label", "3"],
        "--class_label",
        "class-conditional",
    ),
    case("sample-guidance-nan", [*SAMPLE, "--guidance_scale", "nan"], "guidance_scale", "finite"),
    # --- diffkit evaluate
    case(
        "evaluate-num-reference-0", [*EVALUATE, "--num_reference", "0"], "--num_reference", "got 0"
    ),
    case(
        "evaluate-num-reference-negative",
        [*EVALUATE, "--num_reference", "-3"],
        "--num_reference",
        "got -3",
    ),
    case(
        "evaluate-json-under-file",
        [*EVALUATE, "--json", "{tmp}/afile/r.json"],
        "--json",
        "{tmp}/afile' is a file",
    ),
    case(
        "evaluate-json-is-directory",
        [*EVALUATE, "--json", "{tmp}/adir.json"],
        "--json",
        "is a directory",
    ),
    case("evaluate-device-foo", [*EVALUATE, "--device", "foo"], "--device 'foo'"),
    case("evaluate-threads-0", [*EVALUATE, "--num_threads", "0"], "--num_threads", "got 0"),
    case("evaluate-no-metrics", ["evaluate", "{ckpt}"], "give metrics"),
    case(
        "evaluate-missing-source",
        ["evaluate", "{tmp}/missing.pt", "--metrics", "[w2]"],
        "{tmp}/missing.pt",
    ),
    case(
        "evaluate-pt-without-samples",
        ["evaluate", "{tmp}/no_samples.pt", "--metrics", "[w2]", "--data", "gmm"],
        "{tmp}/no_samples.pt",
        "'x'",
    ),
    case(
        "evaluate-shape-mismatch",
        ["evaluate", "{tmp}/three_d.pt", "--metrics", "[w2]", "--data", "gmm"],
        "(3,)",
        "(2,)",
    ),
    case(
        "evaluate-data-batch-0",
        [*EVALUATE, "--data", "gmm", "--data.batch_size", "0"],
        "data",
        "batch_size must be >= 1, got 0",
    ),
    # --- diffkit list and the command itself
    case("list-unknown-kind", ["list", "sdex"], "unknown kind 'sdex'", "Did you mean 'sde'"),
    case("list-unknown-flag", ["list", "--bogus"], "--bogus"),
    case("unknown-command", ["fitt"], "unknown command 'fitt'", "Did you mean 'fit'"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "named"), CASES)
def test_bad_input_exits_2_with_one_message(
    argv: list[str], named: list[str], env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    code = main([a.format(**env) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, err[-2000:]
    assert "Traceback" not in out + err
    for text in named:
        assert text.format(**env) in err, (text, err[-2000:])


def test_the_table_holds_sixty_bad_inputs() -> None:
    assert len(CASES) >= 60


@pytest.mark.slow
def test_traceback_switch_shows_the_traceback(
    env: dict[str, str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = ["fit", "-c", env["tiny"], "--data.init_args.batch_size=1000"]
    assert main([*bad, "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "batch_size=1000" in err
    monkeypatch.setenv("DIFFKIT_TRACEBACK", "1")
    assert main(["sample", env["ckpt"], "--device", "foo"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "--device 'foo'" in err
    assert main(["list", "sdex", "--traceback"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_internal_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffkit.cli.list_cmd as list_cmd

    def broken(kinds: list[str], load: bool) -> list[dict]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(list_cmd, "_records", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["list", "sde"])


@pytest.mark.slow
def test_good_inputs_at_the_edges_still_run(env: dict[str, str], tmp_path: Path) -> None:
    from diffkit.cli.lightning_cli import DiffkitCLI

    edges = [
        "--data.init_args.batch_size=64",  # exactly the training set
        "--num_threads=1",
        "--model.sampler.init_args.steps=1",
        "--model.optimizer.init_args.lr=0",
        f"--trainer.default_root_dir={tmp_path / 'not' / 'yet' / 'there'}",
    ]
    cli = DiffkitCLI(args=["-c", env["tiny"], *edges], run=False)
    assert cli.datamodule.batch_size == 64 and cli.model.sampler.steps == 1
    assert not (tmp_path / "not").exists()  # checked, not created
    out = tmp_path / "new" / "dir" / "s"
    args = ["sample", env["ckpt"], "--output", str(out), "--num_samples", "1", "--batch_size", "1"]
    assert main([*args, "--nrow", "1", "--num_threads", "1", "--metrics", "[]"]) == 0
    assert out.with_suffix(".pt").is_file()
    report = tmp_path / "report" / "r.json"
    args = ["evaluate", env["ckpt"], "--metrics", "[w2]", "--num_samples", "4"]
    assert main([*args, "--num_reference", "2", "--json", str(report)]) == 0
    assert report.is_file()


@pytest.mark.slow
def test_digits_config_runs_with_logging_off(tmp_path: Path) -> None:
    """The documented way to turn logging off works with the digits config."""
    args = ["fit", "-c", str(DIGITS), "--trainer.logger=false", "--trainer.fast_dev_run=1"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--model.sampler.init_args.steps=2"]
    args += ["--model.denoiser.init_args.channels=8"]
    assert main(args) == 0


def test_python_dash_m_answers_a_user_error_without_traceback(tmp_path: Path) -> None:
    """A fresh interpreter (the console-script path reading sys.argv)."""
    import subprocess

    missing = tmp_path / "missing.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "diffkit", "fit", "-c", str(missing), "--traceback"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert f"'{missing}' does not exist" in proc.stderr and "Traceback" in proc.stderr
