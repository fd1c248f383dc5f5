"""Files that are not a usable diffkit checkpoint, through every load path.

Each row of :data:`ROWS` makes one bad file; each goes through ``diffkit sample``, ``diffkit
evaluate`` and ``diffkit fit --ckpt_path`` (the real ``main()``), which must exit 2 with one
``diffkit: error:`` line naming the file and no traceback, and through
``DiffusionModule.load_from_checkpoint``, which must raise ``CheckpointError`` naming the file.
The bit-flipped row is a real checkpoint with 8 bytes inverted inside the storage of a weight
tensor (torch does not check the zip CRCs; the SHA-256 digest catches it).
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffkit.checkpoint import CheckpointError, UnverifiedCheckpointWarning
from diffkit.cli.main import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_fit_yaml, fit_tiny_run) -> Path:
    """A finished tiny run: ``fit.yaml``, ``config.yaml`` and ``checkpoints/last.ckpt``."""
    root = tmp_path_factory.mktemp("run")
    fit_tiny_run(root, tiny_fit_yaml())
    return root


def storage_span(path: Path, tensor: torch.Tensor) -> tuple[int, int]:
    """File offset and size of the zip member holding ``tensor``'s bytes (its storage)."""
    want = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename and archive.read(info.filename) == want:
                with path.open("rb") as f:
                    f.seek(info.header_offset)
                    header = f.read(30)
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                return info.header_offset + 30 + name_len + extra_len, info.file_size
    raise LookupError("tensor storage not found in the archive")


def flip_bytes(path: Path, tensor_name: str, count: int = 8) -> None:
    """Invert ``count`` bytes in the middle of the storage of ``state_dict[tensor_name]``."""
    tensor = torch.load(path, weights_only=True)["state_dict"][tensor_name]
    offset, size = storage_span(path, tensor)
    assert size >= 2 * count
    with path.open("r+b") as f:
        f.seek(offset + size // 2)
        data = f.read(count)
        f.seek(offset + size // 2)
        f.write(bytes(b ^ 0xFF for b in data))


# ---------------------------------------------------------------------------- the bad files
def _text(p: Path, good: Path) -> str:
    p.write_text("this is not a checkpoint\n")
    return "text file"


def _yaml(p: Path, good: Path) -> str:
    shutil.copy(good.parents[1] / "fit.yaml", p)  # the run's own config
    return "YAML file"


def _empty(p: Path, good: Path) -> str:
    p.write_bytes(b"")
    return "empty"


def _truncated(p: Path, good: Path) -> str:
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "truncated"


def _first_bytes(p: Path, good: Path) -> str:
    p.write_bytes(good.read_bytes()[:4])
    return "truncated"


def _zip_not_torch(p: Path, good: Path) -> str:
    with zipfile.ZipFile(p, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return "not a torch file"


def _legacy_pickle(p: Path, good: Path) -> str:
    p.write_bytes(pickle.dumps({"state_dict": {}}))
    return "legacy"


def _binary(p: Path, good: Path) -> str:
    p.write_bytes(bytes(range(256)) * 4)
    return "unknown binary"


def _bare_state_dict(p: Path, good: Path) -> str:
    torch.save(torch.load(good, weights_only=True)["state_dict"], p)
    return "bare state_dict"


def _tensor_file(p: Path, good: Path) -> str:
    torch.save({"x": torch.zeros(4, 2), "nfe": 3}, p)  # what 'diffkit sample' writes
    return "not a Lightning checkpoint"


def _other_model(p: Path, good: Path) -> str:
    from lightning.pytorch.demos.boring_classes import BoringModel

    model = BoringModel()
    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": "2.6.6",
            "state_dict": model.state_dict(),
            "hyper_parameters": {},
        },
        p,
    )
    return "another model"


def _pickle_payload(p: Path, good: Path) -> str:
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["payload"] = os.system  # a global weights_only loading refuses to import
    torch.save(checkpoint, p)
    return "safe loading (weights_only) refuses"


def _bad_pickle_crc(p: Path, good: Path) -> str:
    shutil.copy(good, p)
    with zipfile.ZipFile(p) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    with p.open("r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename) + 40)
        f.write(b"\x00\x01\x02\x03")
    return "damaged"


def _bit_flip(p: Path, good: Path) -> str:
    shutil.copy(good, p)
    flip_bytes(p, "net.inp.weight")
    return "tensor 'state_dict/net.inp.weight' differs"


def _bit_flip_optimizer(p: Path, good: Path) -> str:
    shutil.copy(good, p)
    checkpoint = torch.load(p, weights_only=True)
    state = checkpoint["optimizer_states"][0]["state"]
    key = max(state, key=lambda k: state[k]["exp_avg"].numel())
    offset, _ = storage_span(p, state[key]["exp_avg"])
    with p.open("r+b") as f:
        f.seek(offset + 8)
        f.write(b"\xff" * 8)
    return f"tensor 'optimizer_states/0/state/{key}/exp_avg' differs"


def _missing(p: Path, good: Path) -> str:
    return "no file"


def _directory(p: Path, good: Path) -> str:
    p.mkdir()
    return "directory"


#: (file name, maker writing the bad file and returning a phrase of the expected message)
ROWS: list[tuple[str, Callable[[Path, Path], str]]] = [
    ("notes.ckpt", _text),
    ("config.yaml", _yaml),
    ("empty.ckpt", _empty),
    ("truncated.ckpt", _truncated),
    ("four_bytes.ckpt", _first_bytes),
    ("archive.ckpt", _zip_not_torch),
    ("legacy.ckpt", _legacy_pickle),
    ("random.ckpt", _binary),
    ("weights.ckpt", _bare_state_dict),
    ("samples.ckpt", _tensor_file),
    ("boring.ckpt", _other_model),
    ("payload.ckpt", _pickle_payload),
    ("pickle_crc.ckpt", _bad_pickle_crc),
    ("flipped.ckpt", _bit_flip),
    ("flipped_adam.ckpt", _bit_flip_optimizer),
    ("missing.ckpt", _missing),
    ("folder.ckpt", _directory),
]
IDS = [name for name, _ in ROWS]


@pytest.fixture(scope="module")
def bad_files(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("bad")
    good = run / "checkpoints" / "last.ckpt"
    out = {}
    for name, make in ROWS:
        path = folder / name
        out[name] = (path, make(path, good))
    return out


def _assert_refused(code: int, err: str, path: Path, phrase: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("diffkit: error:")]
    assert len(lines) == 1, err
    assert str(path) in lines[0] and phrase in lines[0], lines[0]


@pytest.mark.parametrize("name", IDS)
def test_sample_refuses(name, bad_files, tmp_path, capsys) -> None:
    path, phrase = bad_files[name]
    code = main(["sample", str(path), "--num_samples", "2", "--output", str(tmp_path / "s")])
    _assert_refused(code, capsys.readouterr().err, path, phrase)
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("name", IDS)
def test_evaluate_refuses(name, bad_files, run, capsys) -> None:
    path, phrase = bad_files[name]
    data = ["--data", "toy2d", "--metrics", "[w2]", "--num_samples", "2"]
    code = main(["evaluate", str(path), *data])
    _assert_refused(code, capsys.readouterr().err, path, phrase)


@pytest.mark.parametrize("name", [n for n in IDS if n != "folder.ckpt"])
def test_fit_ckpt_path_refuses(name, bad_files, run, tmp_path, capsys) -> None:
    path, phrase = bad_files[name]
    argv = ["fit", "-c", str(run / "fit.yaml"), f"--trainer.default_root_dir={tmp_path}"]
    code = main([*argv, f"--ckpt_path={path}"])
    _assert_refused(code, capsys.readouterr().err, path, phrase)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("name", IDS)
def test_load_from_checkpoint_refuses(name, bad_files) -> None:
    from diffkit.module import DiffusionModule

    path, phrase = bad_files[name]
    with pytest.raises(CheckpointError) as info:
        DiffusionModule.load_from_checkpoint(str(path), weights_only=True)
    assert str(path) in str(info.value) and phrase in str(info.value)


def test_fit_ckpt_path_folder_without_checkpoints_refuses(bad_files, run, tmp_path, capsys):
    path, _ = bad_files["folder.ckpt"]
    argv = ["fit", "-c", str(run / "fit.yaml"), f"--trainer.default_root_dir={tmp_path}"]
    code = main([*argv, f"--ckpt_path={path}"])
    _assert_refused(code, capsys.readouterr().err, path, "holds no intact checkpoint")


def test_trainer_resume_hook_refuses_a_bit_flip(bad_files, run, tmp_path) -> None:
    """Lightning's own resume (``Trainer.fit(ckpt_path=...)``, no diffkit CLI) verifies too."""
    from diffkit.cli.lightning_cli import DiffkitCLI

    path, phrase = bad_files["flipped.ckpt"]
    cli = DiffkitCLI(
        ["-c", str(run / "fit.yaml"), f"--trainer.default_root_dir={tmp_path}"], run=False
    )
    with pytest.raises(CheckpointError, match=phrase) as info:
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(path))
    assert str(path) in str(info.value)


def test_checkpoint_without_digest_loads_with_a_warning(run, tmp_path, capsys) -> None:
    """A checkpoint written before diffkit recorded digests: sampled, with a warning."""
    good = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(good["diffkit"]["tensors"]) > 20 and len(good["diffkit"]["state"]) == 64
    del good["diffkit"]
    old = tmp_path / "old.ckpt"
    torch.save(good, old)
    with pytest.warns(UnverifiedCheckpointWarning, match="before diffkit recorded"):
        code = main(["sample", str(old), "--num_samples", "3", "--output", str(tmp_path / "s")])
    assert code == 0
    assert torch.load(tmp_path / "s.pt", weights_only=True)["x"].shape == (3, 2)
    from diffkit.module import DiffusionModule

    with pytest.warns(UnverifiedCheckpointWarning):
        module = DiffusionModule.load_from_checkpoint(str(old), weights_only=True)
    assert torch.equal(module.net.inp.weight, good["state_dict"]["net.inp.weight"])


def test_intact_checkpoint_verifies_without_warning(run) -> None:
    import warnings

    from diffkit.checkpoint import read_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedCheckpointWarning)
        checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    # Every tensor of the file is covered: EMA-free weights, their alias and Adam's state.
    names = set(checkpoint["diffkit"]["tensors"])
    assert "state_dict/net.inp.weight" in names and "state_dict/model.net.inp.weight" in names
    assert any(n.startswith("optimizer_states/0/state/") for n in names)


def test_sampling_a_checkpoint_of_a_module_built_in_python_says_how_to_load_it(
    tmp_path, capsys
) -> None:
    """Its hyper-parameters hold no parts (they were objects): sample says what to do."""
    import functools

    import lightning as L

    from diffkit.data.toy2d import Toy2DDataModule
    from diffkit.denoisers.resnet import ResNetMLP
    from diffkit.module import DiffusionModule
    from diffkit.sdes.vp import VPSDE

    module = DiffusionModule(VPSDE(), functools.partial(ResNetMLP, width=8, depth=1, emb_dim=8))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(
        module, Toy2DDataModule("moons", num_train=32, num_val=8, num_test=8, batch_size=32)
    )
    path = tmp_path / "python.ckpt"
    trainer.save_checkpoint(path)
    code = main(["sample", str(path), "--output", str(tmp_path / "s")])
    _assert_refused(code, capsys.readouterr().err, path, "built in Python")
    loaded = DiffusionModule.load_from_checkpoint(
        str(path),
        sde=VPSDE(),
        denoiser=functools.partial(ResNetMLP, width=8, depth=1, emb_dim=8),
        weights_only=True,
    )
    assert torch.equal(loaded.net.inp.weight, module.net.inp.weight)
