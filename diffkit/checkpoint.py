"""Reading diffkit checkpoints: recognised before unpickling, verified by content digest.

Every checkpoint :class:`~diffkit.module.DiffusionModule` writes carries, under the top-level
key ``"diffkit"``, the diffkit version and a SHA-256 digest of every tensor of the checkpoint
(weights, EMA weights, optimizer state, ...; named by their key path, e.g.
``state_dict/net.inp.weight``) and one digest of the whole state. torch's zip reader does not
check the archive's CRCs, so a flipped byte inside a weight would otherwise load silently;
every load path (``diffkit sample``/``evaluate``, ``diffkit fit --ckpt_path``,
``DiffusionModule.load_from_checkpoint``) recomputes the digests and refuses a mismatch, naming
the first tensor that differs. Checkpoints written before the digest existed load with an
:class:`UnverifiedCheckpointWarning`.

Before anything is unpickled, :func:`inspect_file` checks that the file is a torch zip archive
(magic bytes, zip directory, ``data.pkl`` with a valid CRC) holding a Lightning checkpoint of a
``DiffusionModule``; it reads the pickle's opcodes (:mod:`pickletools`) without executing them.
Anything else (a text or YAML file, an empty or truncated file, a bare ``state_dict``, another
model's checkpoint) raises :class:`CheckpointError` naming the file and what it is.

Crash safety: Lightning serialises a checkpoint in memory, writes it to a temporary file and
moves it over the target name, so a kill during a save leaves the previous file in place. A
``ModelCheckpoint`` with ``save_last`` writes ``epoch=N.ckpt`` first and ``last.ckpt`` second,
so a kill between the two leaves ``last.ckpt`` one save behind; :func:`resolve_resume` picks the
newest intact checkpoint next to ``last.ckpt`` (or in a run directory) and says which.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffkit.errors import UserError

__all__ = [
    "DIGEST_KEY",
    "CheckpointError",
    "CheckpointInfo",
    "UnverifiedCheckpointWarning",
    "add_digest",
    "check_saved_part",
    "check_torch_file",
    "inspect_file",
    "load_error",
    "loading",
    "loading_path",
    "read_checkpoint",
    "resolve_resume",
    "tensor_digests",
    "verify_digest",
]

#: Top-level checkpoint key of diffkit's record (version, digests).
DIGEST_KEY = "diffkit"
#: Version of the record's layout.
RECORD_FORMAT = 1
_LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
_ZIP_MAGIC = b"PK\x03\x04"
#: Top-level keys outside the digest: the record itself, and the hyper-parameters, which
#: ``load_from_checkpoint(path, **overrides)`` updates in memory before the module verifies.
_NOT_DIGESTED = (DIGEST_KEY, "hyper_parameters", "datamodule_hyper_parameters")
_FIT_HINT = "a checkpoint written by 'diffkit fit' (RUN/checkpoints/last.ckpt)"


class CheckpointError(UserError):
    """A file that is not a usable diffkit checkpoint (the message names the file and why)."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint written before diffkit recorded content digests: loaded unverified."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_file` found: ``path`` and whether it carries ``digests``."""

    path: Path
    digests: bool


# ---------------------------------------------------------------------------- digests
def _tensor_digest(t: Tensor) -> str:
    """SHA-256 of dtype, shape and the bytes of ``t`` (row-major, on the CPU)."""
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    data = t.resolve_conj().resolve_neg().cpu().contiguous().reshape(-1).view(torch.uint8)
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(memoryview(data.numpy()))
    return h.hexdigest()


def _walk(obj: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    if isinstance(obj, Tensor):
        # Plain tensors only: subclasses (DTensor shards, ...) and meta tensors have no bytes here.
        if type(obj) in (Tensor, torch.nn.Parameter) and obj.device.type != "meta":
            yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if prefix == "" and key in _NOT_DIGESTED:
                continue
            yield from _walk(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{prefix}/{i}" if prefix else str(i))


def tensor_digests(checkpoint: dict[str, Any]) -> dict[str, str]:
    """``{key path: SHA-256}`` of every tensor of ``checkpoint`` (the digest record excluded).

    Views of one storage (``net.*`` and ``model.net.*``) are hashed once.
    """
    out: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in _walk(checkpoint, ""):
        key = (
            t.untyped_storage().data_ptr() if t.layout == torch.strided else id(t),
            t.storage_offset() if t.layout == torch.strided else 0,
            tuple(t.shape),
            tuple(t.stride()) if t.layout == torch.strided else (),
            t.dtype,
            str(t.device),
        )
        if key not in seen or t.numel() == 0:
            seen[key] = _tensor_digest(t)
        out[name] = seen[key]
    return out


def _state_digest(digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name, digest in digests.items():
        h.update(f"{name}\t{digest}\n".encode())
    return h.hexdigest()


def add_digest(checkpoint: dict[str, Any]) -> None:
    """Record diffkit's version and the content digests in ``checkpoint`` (in place)."""
    import diffkit

    digests = tensor_digests(checkpoint)
    checkpoint[DIGEST_KEY] = {
        "format": RECORD_FORMAT,
        "version": diffkit.__version__,
        "algorithm": "sha256",
        "tensors": digests,
        "state": _state_digest(digests),
    }


def verify_digest(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> bool:
    """Check ``checkpoint`` against its recorded digests; ``False`` (and a warning) if it has none.

    Raises:
        CheckpointError: a tensor differs from the one saved, or the record is damaged.
    """
    record = checkpoint.get(DIGEST_KEY)
    if record is None:
        warnings.warn(
            f"{source} was written before diffkit recorded content digests: its tensors "
            "cannot be verified (save it again with this diffkit to add them)",
            UnverifiedCheckpointWarning,
            stacklevel=2,
        )
        return False
    saved = record.get("tensors") if isinstance(record, dict) else None
    if not isinstance(saved, dict) or record.get("algorithm") != "sha256":
        raise CheckpointError(f"{source}: its diffkit digest record is damaged or unknown")
    now = tensor_digests(checkpoint)
    for name, digest in saved.items():
        if name not in now:
            raise CheckpointError(
                f"{source} is damaged: tensor '{name}' recorded at save time is missing"
            )
        if now[name] != digest:
            raise CheckpointError(
                f"{source} is damaged: tensor '{name}' differs from the one saved (SHA-256 "
                "mismatch; the file was altered after it was written, e.g. a bad disk or an "
                "interrupted copy). Use another checkpoint of the run"
            )
    extra = [name for name in now if name not in saved]
    if extra:
        raise CheckpointError(
            f"{source} is damaged: tensor '{extra[0]}' was not in the checkpoint when it was saved"
        )
    if record.get("state") != _state_digest(saved):
        raise CheckpointError(f"{source}: its diffkit digest record is damaged (state digest)")
    return True


# ---------------------------------------------------------------------------- recognition
def _text_kind(path: Path, head: bytes) -> str | None:
    """``"a YAML file ..."``/``"a text file ..."`` when ``head`` decodes as text, else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the end of the head
            return None
        text = head[: err.start].decode("utf-8")
    if any(ch in text for ch in "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f"):
        return None
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    if path.suffix.lower() in (".yaml", ".yml") or _looks_like_yaml(path):
        return f"a YAML file (a config? give configs to 'diffkit fit -c'); starts with {first!r}"
    return f"a text file, starting with {first!r}"


def _looks_like_yaml(path: Path) -> bool:
    if path.stat().st_size > 1 << 20:
        return False
    import yaml

    try:
        return isinstance(yaml.safe_load(path.read_text()), dict)
    except (yaml.YAMLError, UnicodeDecodeError):
        return False


def _pickle_strings(path: Path, expected: str) -> set[str]:
    """The string constants of the ``data.pkl`` of a torch zip archive (nothing executed)."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); expected {expected}")
    with path.open("rb") as f:
        head = f.read(512)
    if not head.startswith(_ZIP_MAGIC):
        if head[:1] == b"\x80":
            what = "a legacy (non-zip) pickle file"
        else:
            what = _text_kind(path, head) or f"an unknown binary file (first bytes {head[:8]!r})"
        raise CheckpointError(f"{path} is {what}, not a torch checkpoint; expected {expected}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise CheckpointError(
                    f"{path} is a zip archive but not a torch file (no data.pkl); "
                    f"expected {expected}"
                )
            data = archive.read(pkl)  # checks data.pkl's CRC
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} is a damaged or truncated torch zip archive ({size} bytes: {err}); its "
            "write or copy was interrupted. Use another checkpoint of the run"
        ) from err
    strings: set[str] = set()
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                strings.add(arg)
    except Exception as err:  # pickletools raises ValueError and others on garbage
        raise CheckpointError(f"{path} is damaged: its data.pkl is not a valid pickle") from err
    return strings


def inspect_file(path: str | Path) -> CheckpointInfo:
    """Recognise a diffkit checkpoint without unpickling it.

    Raises:
        CheckpointError: no such file, or a file that is not a Lightning checkpoint of a
            ``DiffusionModule`` (the message says what it is).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint: no file at '{path}'")
    if path.is_dir():
        raise CheckpointError(f"checkpoint: '{path}' is a directory; expected {_FIT_HINT}")
    strings = _pickle_strings(path, _FIT_HINT)
    diffkit_weights = any(s.startswith("net.") for s in strings) and any(
        s.startswith("model.net.") for s in strings
    )
    if not all(key in strings for key in _LIGHTNING_KEYS):
        if diffkit_weights:
            raise CheckpointError(
                f"{path} is a bare state_dict of a diffkit model, not a Lightning checkpoint: it "
                f"has no hyper-parameters to rebuild the model from; expected {_FIT_HINT}"
            )
        raise CheckpointError(
            f"{path} is a torch file but not a Lightning checkpoint (no 'state_dict' and "
            f"'pytorch-lightning_version' keys); expected {_FIT_HINT}"
        )
    if DIGEST_KEY in strings:
        return CheckpointInfo(path, digests=True)
    if diffkit_weights:
        return CheckpointInfo(path, digests=False)
    raise CheckpointError(
        f"{path} is a Lightning checkpoint of another model, not of diffkit's DiffusionModule "
        f"(no 'net.*' and 'model.net.*' weights); expected {_FIT_HINT}"
    )


def check_torch_file(path: str | Path, expected: str) -> None:
    """Check that ``path`` is a readable torch zip archive (e.g. a sample file) before loading."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at '{path}'; expected {expected}")
    _pickle_strings(path, expected)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict of ``path``: recognised, loaded (``weights_only``), verified."""
    info = inspect_file(path)
    try:
        checkpoint = torch.load(info.path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError/UnpicklingError/EOFError/...
        raise load_error(path, err) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dict")
    verify_digest(checkpoint, path)
    return checkpoint


def load_error(path: str | Path, err: BaseException) -> CheckpointError:
    """The :class:`CheckpointError` for a ``torch.load`` failure (one line, names the file)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if "Weights only load failed" in text:
        what = f" ({found.group(1)})" if found else ""
        return CheckpointError(
            f"{path} holds a pickled object{what} that safe loading (weights_only) refuses; "
            "diffkit checkpoints hold plain data only, so it was not written by 'diffkit fit'"
        )
    reason = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return CheckpointError(f"{path} cannot be loaded: {reason}")


# ---------------------------------------------------------------------------- which file
def _step(path: Path) -> tuple[int, int] | None:
    """``(global_step, epoch)`` of an intact-looking checkpoint (its tensors not read), or None."""
    try:
        inspect_file(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", -1)), int(ckpt.get("epoch", -1))
    except Exception:
        return None


def resolve_resume(path: str | Path) -> tuple[Path, str | None]:
    """The checkpoint to resume from for ``path``, and a note when it is not ``path`` itself.

    ``path`` may be a run directory or a checkpoint directory (the newest intact checkpoint in
    it, or in its ``checkpoints/``), or ``last*.ckpt``: a crash between the two writes of a save
    leaves ``last.ckpt`` behind ``epoch=N.ckpt``, so a strictly newer intact sibling is used
    instead. Newest means the largest ``(global_step, epoch)``; each candidate is verified.

    Raises:
        CheckpointError: no usable checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        chosen = _newest(sorted(folder.glob("*.ckpt")), None)
        if chosen is None:
            raise CheckpointError(f"'{path}' holds no intact checkpoint (*.ckpt); {_FIT_HINT}")
        return chosen, f"resuming from the newest intact checkpoint in {folder}: {chosen.name}"
    if not path.name.startswith("last") or path.suffix != ".ckpt" or not path.parent.is_dir():
        return path, None
    own = _step(path) if path.is_file() else None
    siblings = [p for p in sorted(path.parent.glob("*.ckpt")) if p != path]
    chosen = _newest(siblings, own)
    if chosen is None:
        return path, None
    step = _step(chosen)
    why = (
        "is damaged"
        if own is None
        else f"(step {own[0]}) is older than a checkpoint next to it (a crash between the two "
        "writes of a save)"
    )
    where = f"{chosen.name} (step {step[0] if step else '?'})"
    return chosen, f"{path} {why}; resuming from the newest intact one, {where}"


def _newest(candidates: list[Path], floor: tuple[int, int] | None) -> Path | None:
    steps = [(s, p) for p in candidates if (s := _step(p)) is not None]
    for s, p in sorted(steps, key=lambda sp: sp[0], reverse=True):
        if floor is not None and not s > floor:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnverifiedCheckpointWarning)
                read_checkpoint(p)
        except CheckpointError:
            continue
        return p
    return None


# ---------------------------------------------------------------------------- building
_LOADING: contextvars.ContextVar[str | None] = contextvars.ContextVar("_LOADING", default=None)


@contextlib.contextmanager
def loading(path: str | Path) -> Iterator[None]:
    """Within it, :func:`loading_path` names ``path`` (for messages of ``on_load_checkpoint``)."""
    token = _LOADING.set(str(path))
    try:
        yield
    finally:
        _LOADING.reset(token)


def loading_path() -> str | None:
    """The checkpoint file being loaded by ``load_from_checkpoint``, if any."""
    return _LOADING.get()


def check_saved_part(path: str | Path, part: str, kind: str, class_path: str) -> None:
    """Raise the registry's one-line error when a saved part's ``class_path`` cannot be imported.

    ``kind`` is the registry kind (``"sampler"``, ...); short-name alias paths
    (``diffkit.aliases.samplers.ddim``) are looked up by name, other paths as they are.

    Raises:
        CheckpointError: the part's plugin is missing or broken (the registry says which).
    """
    from diffkit.registry import REGISTRIES, RegistryError

    prefix = f"diffkit.aliases.{kind}s."
    name = class_path[len(prefix) :] if class_path.startswith(prefix) else class_path
    try:
        REGISTRIES[kind].get(name)
    except RegistryError as err:
        hint = " Sample with another sampler: --sampler ddim." if part == "sampler" else ""
        raise CheckpointError(
            f"{path}: the model's {part} '{name}' cannot be loaded: {err}{hint}"
        ) from err
