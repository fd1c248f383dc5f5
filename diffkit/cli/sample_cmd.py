"""``diffkit sample`` and ``diffkit evaluate``: draw samples from a checkpoint, score them.

``diffkit sample RUN/checkpoints/last.ckpt --sampler deis --sampler.steps 10 --num_samples 64``
loads the module (``DiffusionModule.load_for_sampling``: the file is recognised
before it is unpickled, its digests are verified, and only the parts sampling uses are built;
diffkit checkpoints hold the EMA weights as the state dict), samples with the module's sampler
or any registered sampler and options by short name (``--sampler`` replaces the saved one,
which is then not built), writes ``<output>.pt`` (samples ``x`` and the run
facts) and ``<output>.png`` (an image grid for ``(C, H, W)`` data with C in 1, 3, a scatter plot
for 2-D data), and prints the NFE and wall time.

``diffkit evaluate SOURCE`` computes metrics (short names: ``--metrics '[w2, mmd]'`` or
``--metrics+ fid --metrics.feature random``) of a checkpoint's samples (SOURCE a ``.ckpt``) or of
a sample file (a ``.pt`` written by ``diffkit sample``) against held-out data: ``--data`` (a
datamodule, by short name) or the datamodule of the run's saved ``config.yaml`` (searched next
to SOURCE and one and two directories up). Data metrics (``nll``) need a checkpoint. Prints one
line per metric with its ``n`` and optionally writes JSON.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffkit.cli.boundary import answer, split_traceback_flag
from diffkit.cli.input_checks import (
    check_config_file,
    check_device,
    check_output_file,
    check_positive,
    check_sampler,
    check_tensor_memory,
)
from diffkit.errors import UserError

__all__ = ["evaluate_main", "find_run_config", "sample_main"]


class CommandError(UserError):
    """A user error of ``diffkit sample``/``evaluate`` (exit status 2, no traceback)."""


def _parser(prog: str, description: str) -> Any:
    from diffkit.cli.parser import ShortNameArgumentParser
    from diffkit.registry import materialize_all

    materialize_all()
    return ShortNameArgumentParser(prog=prog, description=description)


def _instantiate(parser: Any, cfg: Any) -> Any:
    """Build the parts named in ``cfg``; a part rejecting its arguments is a user error."""
    from diffkit.cli.run_checks import explain_build_error

    build = getattr(parser, "instantiate", None) or parser.instantiate_classes
    try:
        return build(cfg)
    except (ValueError, LookupError) as err:
        raise CommandError(explain_build_error(err, cfg)) from err


def _add_sampling_args(parser: Any) -> None:
    from diffkit.samplers.base import Sampler

    parser.add_argument(
        "--sampler",
        type=Sampler | None,
        default=None,
        help="sampler by short name with options (--sampler deis --sampler.steps 10); "
        "default: the checkpoint's",
    )
    parser.add_argument("--num_samples", type=int, default=64, help="samples to draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    parser.add_argument("--batch_size", type=int, default=1000, help="samples per sampler call")
    parser.add_argument("--device", type=str, default="cpu", help="torch device")
    parser.add_argument(
        "--guidance_scale",
        type=float | None,
        default=None,
        help="classifier-free guidance scale of a class-conditional model (1: conditional, "
        "0: unconditional; each guided step costs 2 NFE); default: the checkpoint's",
    )
    parser.add_argument(
        "--class_label",
        type=int | None,
        default=None,
        help="class of every sample of a class-conditional model (default: labels cycle "
        "0, 1, ..., num_classes - 1)",
    )
    parser.add_argument(
        "--num_threads",
        type=int | None,
        default=None,
        help="CPU intra-op threads (torch.set_num_threads), as in 'diffkit fit'; null keeps "
        "torch's default. 1 is much faster for small models on a busy CPU.",
    )


def _check_sampling_args(init: Any) -> None:
    """The sampling arguments, checked before the checkpoint is loaded; sets the threads."""
    check_positive(init.num_samples, "--num_samples")
    check_positive(init.batch_size, "--batch_size")
    check_positive(init.num_threads, "--num_threads", allow_none=True)
    check_device(init.device)
    if init.num_threads is not None:
        torch.set_num_threads(init.num_threads)


def _check_sampling_size(module: Any, init: Any) -> None:
    """The sampler's plan and the samples fit in memory."""
    sampler = init.sampler or module.sampler
    field = "--sampler" if init.sampler is not None else "the checkpoint's sampler"
    check_sampler(sampler, module.sde, field)
    per_sample = math.prod(module.sde.state_shape(tuple(module.data_shape)))
    check_tensor_memory(init.num_samples * per_sample, 4, "--num_samples", "the samples")


def load_module(path: str | Path, device: str = "cpu", sampler: Any = None) -> Any:
    """The :class:`DiffusionModule` of a checkpoint, in eval mode on ``device``, recognised and
    verified; ``sampler`` replaces the saved one, which is then not built."""
    from diffkit.module import DiffusionModule

    return DiffusionModule.load_for_sampling(path, device, sampler=sampler)


def draw(
    module: Any,
    n: int,
    *,
    sampler: Any = None,
    seed: int = 0,
    batch_size: int = 1000,
    guidance_scale: float | None = None,
    class_label: int | None = None,
) -> tuple[torch.Tensor, int, float]:
    """``n`` samples in batches (one seeded generator), the NFE per sample, the wall time.

    Class-conditional models get ``class_label`` for every sample, or labels cycling over the
    classes, and classifier-free guidance with ``guidance_scale`` (default: the module's)."""
    if n < 1 or batch_size < 1:
        raise CommandError(f"num_samples and batch_size must be >= 1, got {n} and {batch_size}")
    classes = getattr(module, "num_classes", None)
    if not classes and (class_label is not None or guidance_scale not in (None, 1.0)):
        raise CommandError(
            "--class_label and --guidance_scale need a class-conditional model (trained with "
            "data.init_args.conditional: true); this checkpoint is unconditional: drop them"
        )
    if class_label is not None and not 0 <= class_label < classes:
        raise CommandError(
            f"--class_label {class_label} is not a class of this model: use 0 .. {classes - 1}"
        )
    if guidance_scale is not None and not math.isfinite(guidance_scale):
        raise CommandError(f"--guidance_scale must be a finite number, got {guidance_scale}")
    generator = torch.Generator(device=module.device).manual_seed(seed)
    out, nfe = [], 0
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        cond = None
        if classes:
            cond = torch.arange(lo, hi, device=module.device) % classes
            if class_label is not None:
                cond = torch.full_like(cond, class_label)
        res = module.sample(
            hi - lo, sampler=sampler, generator=generator, cond=cond, guidance_scale=guidance_scale
        )
        out.append(res.x.detach().cpu())
        nfe = int(res.nfe)
    return torch.cat(out), nfe, time.perf_counter() - start


def _draw_for(module: Any, init: Any) -> tuple[torch.Tensor, int, float]:
    """:func:`draw` with the sampling arguments of ``init``, after :func:`_check_sampling_size`."""
    _check_sampling_size(module, init)
    return draw(
        module,
        init.num_samples,
        sampler=init.sampler,
        seed=init.seed,
        batch_size=init.batch_size,
        guidance_scale=init.guidance_scale,
        class_label=init.class_label,
    )


def save_picture(x: torch.Tensor, path: Path, nrow: int | None = None) -> Path | None:
    """An image grid (``(N, C, H, W)``, C in 1, 3, values in [-1, 1]) or a 2-D scatter PNG."""
    if x.dim() == 4 and x.shape[1] in (1, 3):
        from torchvision.utils import make_grid, save_image

        grid = make_grid(
            x.float().add(1).div(2).clamp(0, 1),
            nrow=nrow or math.ceil(math.sqrt(x.shape[0])),
            padding=2,
            pad_value=1.0,
        )
        save_image(grid, str(path))
        return path
    if x.dim() == 2 and x.shape[1] == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        pts = x.double().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.6)
        ax.set_aspect("equal")
        ax.set_title(f"{x.shape[0]} samples")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
    return None


def _run(main: Any, argv: Sequence[str] | None) -> int:
    """Run a command through the user-error boundary; a ``ValueError``/``LookupError`` raised
    by a part it builds or a file it reads is also a user error here."""
    args, show_traceback = split_traceback_flag(sys.argv[1:] if argv is None else argv)

    def call() -> int:
        try:
            return main(args)
        except SystemExit as exit_:  # --help and parser errors
            code = exit_.code
            return code if isinstance(code, int) else (0 if code is None else 2)

    return answer(
        call, show_traceback=show_traceback, user_errors=(UserError, ValueError, LookupError)
    )


def _sample(argv: list[str]) -> int:
    from torchmetrics import Metric

    from diffkit.data.base import DiffusionDataModule

    parser = _parser("diffkit sample", "Draw samples from a diffkit checkpoint.")
    parser.add_argument("checkpoint", type=str, help="path of a .ckpt file")
    _add_sampling_args(parser)
    parser.add_argument(
        "--output", type=str, default="samples", help="output path stem (.pt and .png added)"
    )
    parser.add_argument("--nrow", type=int | None, default=None, help="images per grid row")
    parser.add_argument(
        "--metrics",
        type=list[Metric] | None,
        default=None,
        help="metrics of the samples vs the run's held-out data (default: [sinkhorn] when the "
        "run's config.yaml is found; '[]' for none)",
    )
    parser.add_argument(
        "--data",
        type=DiffusionDataModule | None,
        default=None,
        help="datamodule of the held-out data (default: from the run's config.yaml)",
    )
    cfg = parser.parse_args(argv)
    init = _instantiate(parser, cfg)
    _check_sampling_args(init)
    check_positive(init.nrow, "--nrow", allow_none=True)
    check_output_file(_stem(init.output).with_suffix(".pt"), "--output")
    check_output_file(_stem(init.output).with_suffix(".png"), "--output")
    module = load_module(init.checkpoint, init.device, init.sampler)
    x, nfe, seconds = _draw_for(module, init)
    stem = _stem(init.output)
    stem.parent.mkdir(parents=True, exist_ok=True)
    sampler = init.sampler or module.sampler
    tensor_path = stem.with_suffix(".pt")
    torch.save(
        {
            "x": x,
            "nfe": nfe,
            "seconds": seconds,
            "seed": init.seed,
            "sampler": type(sampler).__name__,
            "checkpoint": str(init.checkpoint),
            "guidance_scale": init.guidance_scale,
            "class_label": init.class_label,
        },
        tensor_path,
    )
    picture = save_picture(x, stem.with_suffix(".png"), init.nrow)
    print(
        f"diffkit sample: {x.shape[0]} samples {tuple(x.shape[1:])} with "
        f"{type(sampler).__name__}: NFE {nfe}, wall time {seconds:.3f} s"
    )
    print(f"  samples: {tensor_path}" + (f"\n  picture: {picture}" if picture else ""))
    metrics = init.metrics
    if metrics is None:  # default: Sinkhorn to held-out data, when the run can be found
        if init.data is None and find_run_config(init.checkpoint) is None:
            return 0
        from diffkit.metrics.wasserstein import Sinkhorn

        metrics = [Sinkhorn()]
    if metrics:
        ref = held_out(init.checkpoint, init.data, x.shape[0], init.seed)
        print(f"  vs {ref.shape[0]} held-out samples:")
        print_results(compute_metrics(list(metrics), x, ref, module), x.shape[0])
    return 0


def _stem(output: str) -> Path:
    """``--output`` without a ``.pt``/``.png`` suffix."""
    stem = Path(output)
    return stem.with_suffix("") if stem.suffix in (".pt", ".png") else stem


def sample_main(argv: Sequence[str] | None = None) -> int:
    """``diffkit sample CHECKPOINT [--sampler NAME --sampler.OPTION V ...]``; exit code."""
    return _run(_sample, argv)


def find_run_config(checkpoint: str | Path) -> Path | None:
    """The ``config.yaml`` a run saved, next to its checkpoint or one or two levels up."""
    here = Path(checkpoint).resolve().parent
    for d in (here, here.parent, here.parent.parent):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    return None


def datamodule_from_config(path: Path) -> Any:
    """Instantiate the ``data`` section of a saved run config."""
    import yaml

    from diffkit.data.base import DiffusionDataModule

    check_config_file(path)
    cfg = yaml.safe_load(path.read_text())
    if "data" not in cfg or cfg["data"] is None:
        raise CommandError(f"{path} has no 'data' section; give the datamodule with --data")
    parser = _parser("diffkit evaluate (config data)", "")
    parser.add_argument("--data", type=DiffusionDataModule)
    parsed = parser.parse_object({"data": cfg["data"]})
    return _instantiate(parser, parsed).data


def held_out(source: str | Path, data: Any, n: int, seed: int) -> torch.Tensor:
    """``n`` held-out samples from ``data``, or from the datamodule of the run that wrote
    ``source`` (its ``config.yaml``)."""
    dm = data
    if dm is None:
        config = find_run_config(source)
        if config is None:
            raise CommandError(
                f"no config.yaml found near '{source}'; give the held-out data with --data "
                "(e.g. --data toy2d --data.dataset moons)"
            )
        dm = datamodule_from_config(config)
    return dm.reference_samples(n, generator=torch.Generator().manual_seed(seed + 1))


def compute_metrics(
    metrics: list[Any], x: torch.Tensor, ref: torch.Tensor, module: Any
) -> dict[str, dict[str, float]]:
    """Each metric of samples ``x`` against held-out ``ref`` (or of ``module`` on ``ref``)."""
    results: dict[str, dict[str, float]] = {}
    for metric in metrics:
        name, i = getattr(metric, "name", type(metric).__name__.lower()), 2
        base = name
        while name in results:
            name, i = f"{base}_{i}", i + 1
        if getattr(metric, "inputs", "samples") == "data":
            if module is None:
                raise CommandError(f"metric '{name}' evaluates a model: give a checkpoint")
            metric.bind(module.sde, module.model)
            metric.update(ref)
        else:
            metric.update(x, ref)
        out = metric.compute()
        if not isinstance(out, dict):
            out = {"value": out}
        results[name] = {k: float(torch.as_tensor(v).double().mean()) for k, v in out.items()}
    return results


def print_results(results: dict[str, dict[str, float]], num_samples: int) -> None:
    for name, res in results.items():
        extra = ", ".join(f"{k}={v:.4g}" for k, v in res.items() if k not in ("value", "n"))
        n = int(res.get("n", num_samples))
        print(f"  {name:<12} {res['value']:.6g}  (n={n}{', ' + extra if extra else ''})")


def _evaluate(argv: list[str]) -> int:
    from torchmetrics import Metric

    from diffkit.data.base import DiffusionDataModule

    parser = _parser(
        "diffkit evaluate",
        "Metrics of a checkpoint's samples or of a sample file vs held-out data.",
    )
    parser.add_argument(
        "source", type=str, help="a checkpoint (.ckpt) to sample from, or a sample file (.pt)"
    )
    parser.add_argument(
        "--metrics",
        type=list[Metric],
        default=[],
        help="metrics by short name, e.g. '[w2, mmd]' or --metrics+ fid --metrics.feature random",
    )
    parser.add_argument(
        "--data",
        type=DiffusionDataModule | None,
        default=None,
        help="datamodule of the held-out data (default: from the run's config.yaml)",
    )
    parser.add_argument(
        "--num_reference", type=int | None, default=None, help="held-out samples (default: n)"
    )
    parser.add_argument("--json", type=str | None, default=None, help="write results to this file")
    _add_sampling_args(parser)
    cfg = parser.parse_args(argv)
    init = _instantiate(parser, cfg)
    _check_sampling_args(init)
    check_positive(init.num_reference, "--num_reference", allow_none=True)
    if init.json:
        check_output_file(init.json, "--json")
    if Path(init.source).is_dir():
        raise CommandError(f"source: '{init.source}' is a directory, not a .ckpt or .pt file")
    if not Path(init.source).is_file():
        raise CommandError(f"source: no file at '{init.source}' (a .ckpt or a .pt sample file)")
    is_checkpoint = Path(init.source).suffix == ".ckpt"
    metrics = list(init.metrics)
    if not metrics:
        raise CommandError("give metrics, e.g. --metrics '[w2, mmd]' (see 'diffkit list metric')")

    module = load_module(init.source, init.device, init.sampler) if is_checkpoint else None
    nfe, seconds = None, None
    if module is not None:
        x, nfe, seconds = _draw_for(module, init)
    else:
        from diffkit.checkpoint import check_torch_file

        check_torch_file(init.source, "a .ckpt checkpoint or a .pt sample file of 'diffkit sample'")
        loaded = torch.load(init.source, map_location="cpu", weights_only=True)
        x = loaded.get("x") if isinstance(loaded, dict) else loaded
        if not isinstance(x, torch.Tensor):
            raise CommandError(f"source {init.source}: expected a tensor or a dict with 'x'")

    n_ref = x.shape[0] if init.num_reference is None else init.num_reference
    ref = held_out(init.source, init.data, n_ref, init.seed)
    if tuple(ref.shape[1:]) != tuple(x.shape[1:]):
        raise CommandError(
            f"samples have shape {tuple(x.shape[1:])} but the held-out data "
            f"{tuple(ref.shape[1:])}: evaluate against the datamodule the model was trained on"
        )
    n_ref = ref.shape[0]
    results = compute_metrics(metrics, x, ref, module)
    header = f"diffkit evaluate: {x.shape[0]} samples vs {n_ref} held-out"
    if nfe is not None:
        header += f" (sampling NFE {nfe}, {seconds:.3f} s)"
    print(header)
    print_results(results, x.shape[0])
    if init.json:
        payload = {"metrics": results, "num_samples": int(x.shape[0]), "nfe": nfe}
        Path(init.json).parent.mkdir(parents=True, exist_ok=True)
        Path(init.json).write_text(json.dumps(payload, indent=2))
    return 0


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``diffkit evaluate SOURCE (.ckpt or .pt) --metrics '[w2, ...]'``; exit code."""
    return _run(_evaluate, argv)
