"""One directory per run, and a short summary of where its outputs are.

The *run directory* holds the resolved ``config.yaml``, ``checkpoints/`` and the sample plots:
with a :class:`~lightning.pytorch.loggers.WandbLogger` it is the W&B run directory (offline:
``<save_dir>/wandb/offline-run-<date>-<id>/``), otherwise the logger's ``log_dir`` or the
trainer's ``default_root_dir``. It is resolved on rank 0 and broadcast, once per trainer.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["RunSummary", "run_directory", "wandb_logger"]

_ATTR = "_diffkit_run_dir"


def wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    """The trainer's W&B logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger
    return None


def run_directory(trainer: L.Trainer) -> Path:
    """The run directory (created). Collective on first call: call it on every rank."""
    cached = getattr(trainer, _ATTR, None)
    if cached is not None:
        return Path(cached)
    path = None
    wandb = wandb_logger(trainer)
    # ``trainer.log_dir`` is itself a broadcast: read it on every rank, never under rank 0 only
    # (a rank-0-only read puts the ranks one collective apart and hangs DDP).
    log_dir = trainer.log_dir if wandb is None else None
    if trainer.is_global_zero:
        if wandb is not None:
            path = str(Path(wandb.experiment.dir).parent)  # <run>/files -> <run>
        elif log_dir is not None:
            path = str(log_dir)
        else:
            path = str(trainer.default_root_dir)
        Path(path).mkdir(parents=True, exist_ok=True)
    path = trainer.strategy.broadcast(path)
    setattr(trainer, _ATTR, path)
    return Path(path)


class RunSummary(Callback):
    """Puts checkpoints in the run directory and prints where the outputs are at fit end.

    ``ModelCheckpoint`` callbacks without an explicit ``dirpath`` write to
    ``<run directory>/checkpoints``. The summary (rank 0) names the checkpoint, the resolved
    config and the latest sample plot of any callback exposing ``last_plot``.
    """

    def __init__(self, config_filename: str = "config.yaml") -> None:
        self.config_filename = config_filename

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_dir = run_directory(trainer)
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(run_dir / "checkpoints")

    def summary(self, trainer: L.Trainer) -> list[tuple[str, str]]:
        """``(label, path)`` rows of what this run wrote."""
        run_dir = run_directory(trainer)
        rows = [("run directory", str(run_dir))]
        ckpt = trainer.checkpoint_callback
        if ckpt is not None:
            path = ckpt.last_model_path or ckpt.best_model_path
            if path:
                rows.append(("checkpoint", path))
        config = run_dir / self.config_filename
        if config.exists():
            rows.append(("config", str(config)))
        for callback in trainer.callbacks:
            plot = getattr(callback, "last_plot", None)
            if plot:
                rows.append(("samples plot", str(plot)))
        wandb = wandb_logger(trainer)
        if wandb is not None:
            rows.append(("wandb", f"run {wandb.version} ({_wandb_mode(wandb)})"))
        return rows

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        rows = self.summary(trainer)
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label:<{width}}  {path}" for label, path in rows]
        rank_zero_info("diffkit run summary:\n" + "\n".join(lines))


def _wandb_mode(logger: WandbLogger) -> str:
    settings = getattr(logger.experiment, "settings", None)
    mode = getattr(settings, "mode", None)
    if mode in ("dryrun", "offline"):
        return "offline; upload later with 'wandb sync <run directory>'"
    return f"mode {mode}" if mode else "W&B"
