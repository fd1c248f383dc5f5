"""Image grids of samples during training (fixed seed, EMA weights), saved and logged to W&B.

Every ``every_n_epochs`` epochs (and at the end of training) rank 0 draws ``num_samples`` images
with a generator seeded by ``seed`` — the same noise every time, and the same grid whatever the
number of ranks — using the EMA weights when an :class:`~diffkit.callbacks.ema.EMA` callback is
present. Sampling touches only the module's own networks (no collectives), so the other ranks
simply go on to the next step's all-reduce and wait there. The grid (``torchvision.utils.
make_grid``, images mapped from [-1, 1] to [0, 1]) is saved as
``<run directory>/samples/<tag>.png``, logged with ``WandbLogger.log_image`` under
``sample/grid``, and ``sample/nfe`` and ``sample/seconds`` go to every logger.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from diffkit.callbacks.run_summary import run_directory, wandb_logger
from diffkit.samplers.base import Sampler

__all__ = ["SampleGrid", "image_grid"]


def image_grid(images: Tensor, nrow: int) -> Tensor:
    """``(N, C, H, W)`` images in [-1, 1] -> one ``(3, H', W')`` uint8 grid (C in 1, 3)."""
    from torchvision.utils import make_grid

    unit = images.detach().float().cpu().add(1.0).div(2.0).clamp(0.0, 1.0)
    grid = make_grid(unit, nrow=nrow, padding=2, pad_value=1.0)
    return grid.mul(255.0).round().to(torch.uint8)


class SampleGrid(Callback):
    """A grid of samples every ``every_n_epochs`` epochs, from rank 0, with a fixed seed.

    Args:
        every_n_epochs: draw every this many epochs (0: only at the end of training).
        num_samples: images in the grid.
        nrow: images per row (default: ``ceil(sqrt(num_samples))``).
        seed: seed of the sampling generator (identical noise at every call).
        sampler: overrides the module's sampler (e.g. fewer steps for cheap previews).
        use_ema: sample with the EMA weights when an EMA callback is present.
        on_train_end: also draw at the end of training.
        guidance_scale: classifier-free guidance scale for class-conditional models (default:
            the module's ``guidance_scale``); labels cycle over the classes.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        num_samples: int = 64,
        nrow: int | None = None,
        seed: int = 0,
        sampler: Sampler | None = None,
        use_ema: bool = True,
        on_train_end: bool = True,
        guidance_scale: float | None = None,
    ) -> None:
        if every_n_epochs < 0 or num_samples < 1 or (nrow is not None and nrow < 1):
            raise ValueError(
                "sample_grid: need every_n_epochs >= 0, num_samples >= 1 and nrow >= 1; got "
                f"every_n_epochs={every_n_epochs}, num_samples={num_samples}, nrow={nrow}"
            )
        self.every_n_epochs, self.num_samples, self.seed = every_n_epochs, num_samples, seed
        self.nrow = nrow or math.ceil(math.sqrt(num_samples))
        self.sampler, self.use_ema, self.at_end = sampler, use_ema, on_train_end
        self.guidance_scale = guidance_scale
        self.last_plot: Path | None = None
        self.history: list[dict[str, float]] = []
        self._warned = False

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_directory(trainer)  # collective: resolve while every rank is here

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs > 0
        if self.every_n_epochs and epoch % self.every_n_epochs == 0 and not (last and self.at_end):
            self.draw_grid(trainer, pl_module, tag=f"epoch={epoch:04d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            self.draw_grid(trainer, pl_module, tag="final")

    # ------------------------------------------------------------------ work
    def sample(self, pl_module: Any) -> tuple[Tensor, int, float]:
        """``(num_samples, *data_shape)`` samples, the NFE and the wall time in seconds."""
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        cond = None
        if getattr(pl_module, "num_classes", None):
            cond = torch.arange(self.num_samples, device=pl_module.device) % pl_module.num_classes
        start = time.perf_counter()
        result = pl_module.sample(
            self.num_samples,
            sampler=self.sampler,
            generator=generator,
            cond=cond,
            ema=self.use_ema,  # False: the live weights, bypassing the EMA lookup
            guidance_scale=self.guidance_scale if cond is not None else None,
        )
        return result.x, int(result.nfe), time.perf_counter() - start

    def draw_grid(self, trainer: L.Trainer, pl_module: Any, tag: str) -> Path | None:
        """Sample, save and log one grid (rank 0). Returns the PNG path on rank 0.

        Skipped under ``fast_dev_run`` (like Lightning's checkpointing and logging).
        """
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return None
        shape = tuple(getattr(pl_module, "data_shape", ()))
        if len(shape) != 3 or shape[0] not in (1, 3):
            if not self._warned:
                rank_zero_warn(
                    f"sample_grid: data_shape {shape} is not an image (C, H, W) with C in (1, 3); "
                    "no grids are drawn (use the 'scatter' callback for vector data)"
                )
                self._warned = True
            return None
        samples, nfe, seconds = self.sample(pl_module)
        grid = image_grid(samples, self.nrow)
        path = run_directory(trainer) / "samples" / f"{tag}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
        self.last_plot = path
        metrics = {"sample/nfe": float(nfe), "sample/seconds": float(seconds)}
        self.history.append({"step": float(trainer.global_step), **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        wandb = wandb_logger(trainer)
        if wandb is not None:
            caption = f"{tag}, step {trainer.global_step}, NFE {nfe}"
            wandb.log_image("sample/grid", [str(path)], step=trainer.global_step, caption=[caption])
        rank_zero_info(
            f"sample_grid [{tag}] step {trainer.global_step}: {len(samples)} samples, NFE {nfe}, "
            f"{seconds:.2f} s -> {path}"
        )
        return path
