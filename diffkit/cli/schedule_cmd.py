"""``diffkit schedule``: a sampler's time grid optimised for a data covariance spectrum.

``diffkit schedule --sampler deis --sampler.order 3 --steps 10 --spectrum cifar10 --out grid.json``
minimises the exact W2 (or KL) of the sampler's output law to ``N(0, diag lam)`` over the grid
(:func:`diffkit.gaussian.grid_optimization.optimize_grid`) and writes a grid file that
``--model.sampler.grid grid.json`` (training runs) or ``diffkit sample --sampler.grid grid.json``
loads. The spectrum is a built-in (``cifar10``, ``grf32``), a ``.npy`` file of eigenvalues, or
the empirical covariance of a datamodule's training split (``--data digits``). The SDE defaults to
``vp``; give the one the model is trained with (``--sde ve``, ``--sde.beta_max 20``, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from diffkit.cli.sample_cmd import CommandError, _instantiate, _parser, _run
from diffkit.sdes.time_grids import GridName

__all__ = ["schedule_main"]


def _build_parser():
    from diffkit.data.base import DiffusionDataModule
    from diffkit.samplers.base import Sampler
    from diffkit.sdes.base import LinearSDE

    parser = _parser(
        "diffkit schedule",
        "Optimise a sampler's time grid for a data covariance spectrum (exact W2 or KL).",
    )
    parser.add_argument(
        "--sampler",
        type=Sampler,
        required=True,
        help="deterministic sampler by short name with options (--sampler deis --sampler.order 3)",
    )
    parser.add_argument(
        "--steps", type=int | None, default=None, help="steps (default: the sampler's)"
    )
    parser.add_argument(
        "--sde", type=LinearSDE | None, default=None, help="forward SDE (default: vp)"
    )
    parser.add_argument(
        "--spectrum",
        type=str | None,
        default=None,
        help="cifar10 | grf32 | a .npy file of covariance eigenvalues",
    )
    parser.add_argument(
        "--data",
        type=DiffusionDataModule | None,
        default=None,
        help="datamodule whose training split's empirical covariance gives the spectrum",
    )
    parser.add_argument(
        "--max_samples", type=int, default=50_000, help="training examples read with --data"
    )
    parser.add_argument(
        "--metric", type=Literal["w2", "kl"], default="w2", help="objective: exact W2 or KL"
    )
    parser.add_argument(
        "--init", type=GridName, default="log_snr", help="grid the optimiser starts from"
    )
    parser.add_argument("--iterations", type=int, default=100, help="L-BFGS iterations")
    parser.add_argument("--out", type=str, required=True, help="grid file to write (.json)")
    return parser


def _schedule(argv: list[str]) -> int:
    import diffkit
    from diffkit.gaussian.grid_optimization import optimize_grid
    from diffkit.gaussian.spectra import compress, empirical_spectrum, load_spectrum
    from diffkit.sdes.time_grids import write_grid_file
    from diffkit.sdes.vp import VPSDE

    parser = _build_parser()
    cfg = parser.parse_args(argv)
    if cfg.steps is not None:
        if cfg.steps < 1:
            raise CommandError(f"--steps must be >= 1, got {cfg.steps}")
        cfg.sampler.init_args.steps = cfg.steps
    if (cfg.spectrum is None) == (cfg.data is None):
        raise CommandError(
            "give exactly one of --spectrum (cifar10 | grf32 | FILE.npy) and --data (a "
            "datamodule, e.g. --data digits)"
        )
    if cfg.iterations < 1:
        raise CommandError(f"--iterations must be >= 1, got {cfg.iterations}")
    init = _instantiate(parser, cfg)
    sampler, sde = init.sampler, init.sde if init.sde is not None else VPSDE()
    if init.data is not None:
        lam = empirical_spectrum(init.data, init.max_samples)
        source = f"data:{type(init.data).__name__}"
    else:
        try:
            lam = load_spectrum(init.spectrum)
        except ValueError as err:
            raise CommandError(f"--spectrum: {err}") from err
        source = init.spectrum
    has_modes = sde.transition(torch.ones(1), torch.zeros(1)).basis is not None
    if has_modes:  # per-frequency SDE (blurring): the variances are per DCT frequency
        weights = None
        try:
            sde.check_data_shape(tuple(lam.shape))
        except ValueError as err:
            raise CommandError(
                f"--spectrum: {type(sde).__name__} needs DCT-frequency variances of the data "
                f"shape (C, H, W); got shape {tuple(lam.shape)} ({err})"
            ) from err
    else:  # scalar / CLD: equal eigenvalues behave alike, keep each once with its count
        lam, weights = compress(lam)
        if lam.numel() < 4 * sampler.steps:
            sys.stderr.write(
                f"diffkit schedule: warning: the spectrum has {lam.numel()} distinct eigenvalues "
                f"for {sampler.steps} steps; a grid fitted to so few can be exact for the "
                "Gaussian and poor for the real data (see docs/samplers.md, optimised grids)\n"
            )
    if not bool((lam > 0).all()) and init.metric == "kl":
        raise CommandError("--metric kl needs a spectrum without zero eigenvalues; use w2")
    try:
        sampler.check_sde(sde)
        result = optimize_grid(
            sampler,
            sde,
            lam,
            weights=weights,
            metric=init.metric,
            init=init.init,
            iterations=init.iterations,
        )
    except ValueError as err:
        raise CommandError(f"--sampler ({type(sampler).__name__}): {err}") from err
    spec = cfg.sampler.as_dict()
    spec.get("init_args", {}).pop("grid", None)
    out = write_grid_file(
        Path(init.out),
        result.times,
        grid="optimized",
        sampler=spec,
        nfe=result.nfe,
        sde=cfg.sde.as_dict() if cfg.sde is not None else {"class_path": "diffkit.sdes.vp.VPSDE"},
        spectrum=source,
        dimension=int(weights.sum()) if weights is not None else lam.numel(),
        metric=result.metric,
        value=result.value,
        initial_grid=result.initial_grid,
        initial_value=result.initial_value,
        iterations=result.iterations,
        diffkit_version=diffkit.__version__,
    )
    print(
        f"diffkit schedule: {type(sampler).__name__}, {sampler.steps} steps (NFE {result.nfe}), "
        f"{type(sde).__name__}, spectrum {source}: {result.metric.upper()} "
        f"{result.initial_value:.4g} ({result.initial_grid}) -> {result.value:.4g} (optimized) "
        f"in {result.seconds:.1f} s, {result.iterations} evaluations"
    )
    print(f"  grid file: {out}  (use: --model.sampler.grid {out} or --sampler.grid {out})")
    return 0


def schedule_main(argv: Sequence[str] | None = None) -> int:
    """``diffkit schedule --sampler NAME --steps N --spectrum SPEC --out FILE``; exit code."""
    return _run(_schedule, argv)
