"""2-D scatter plots of samples against held-out data, with the samples' distance to the data.

Every ``every_n_epochs`` epochs and at the end of training, each rank draws its shard of
``num_samples`` with the module's sampler (fixed seed per rank, EMA weights when present); the
shards are gathered and rank 0 draws samples over held-out data (matplotlib, Agg), saves the PNG
in the run directory (``scatter/``), logs it to W&B when a ``WandbLogger`` is active, and logs
``sample/nfe``, ``sample/seconds`` and ``sample/w2`` — the exact 2-Wasserstein distance between
the samples and as many held-out points (POT ``emd2``; biased upwards at finite n).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from diffkit.callbacks.run_summary import run_directory, wandb_logger

__all__ = ["ScatterPlot", "empirical_w2"]


def empirical_w2(x: Tensor, y: Tensor) -> float:
    """Exact W2 between the empirical laws of ``x`` ``(n, d)`` and ``y`` ``(m, d)`` (POT)."""
    import ot

    x, y = (
        x.detach().double().cpu().reshape(len(x), -1),
        y.detach().double().cpu().reshape(len(y), -1),
    )
    a = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64)
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    cost = ot.dist(x, y)  # squared Euclidean
    return float(ot.emd2(a, b, cost, numItermax=2_000_000)) ** 0.5


class ScatterPlot(Callback):
    """Scatter of samples vs held-out data for (the first two coordinates of) vector data.

    Args:
        every_n_epochs: plot every this many epochs (0: only at the end of training).
        num_samples: total samples over all ranks.
        seed: base seed of the sampling generators (rank r uses ``seed + r``).
        x_coord, y_coord: the two coordinates to plot.
        compute_w2: also log ``sample/w2`` to held-out data.
        on_train_start: also plot before the first step (the untrained baseline).
        on_train_end: plot at the end of training.
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        num_samples: int = 2000,
        seed: int = 0,
        x_coord: int = 0,
        y_coord: int = 1,
        compute_w2: bool = True,
        on_train_start: bool = False,
        on_train_end: bool = True,
    ) -> None:
        if every_n_epochs < 0 or num_samples < 1:
            raise ValueError(
                f"scatter: need every_n_epochs >= 0 and num_samples >= 1, got {every_n_epochs}, "
                f"{num_samples}"
            )
        self.every_n_epochs, self.num_samples, self.seed = every_n_epochs, num_samples, seed
        self.coords, self.compute_w2, self.at_end = (x_coord, y_coord), compute_w2, on_train_end
        self.at_start = on_train_start
        self.last_plot: Path | None = None
        self.last_w2: float | None = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_directory(trainer)  # collective: resolve while every rank is here

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start:
            self.plot(trainer, pl_module, tag="start")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs and epoch % self.every_n_epochs == 0 and not self._is_last(trainer):
            self.plot(trainer, pl_module, tag=f"epoch={epoch:04d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            self.plot(trainer, pl_module, tag="final")

    @staticmethod
    def _is_last(trainer: L.Trainer) -> bool:
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        return trainer.current_epoch + 1 >= max_epochs > 0

    # ------------------------------------------------------------------ work
    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, int, float]:
        """Samples ``(num_samples, *data_shape)`` gathered over ranks, NFE and max wall time."""
        world, rank = trainer.world_size, trainer.global_rank
        shard = -(-self.num_samples // world)
        device = pl_module.device
        generator = torch.Generator(device=device).manual_seed(self.seed + rank)
        result = pl_module.sample(shard, generator=generator)
        x = result.x.float()
        seconds = torch.tensor(result.seconds, device=device)
        if world > 1:
            x = pl_module.all_gather(x).reshape(-1, *x.shape[1:])
            seconds = pl_module.all_gather(seconds).max()
        return x[: self.num_samples].cpu(), result.nfe, float(seconds)

    def plot(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> Path | None:
        """Sample on every rank; on rank 0 save and log the plot. Returns the PNG path (rank 0)."""
        samples, nfe, seconds = self.draw(trainer, pl_module)
        if not trainer.is_global_zero:
            return None
        datamodule = trainer.datamodule
        data = None
        if datamodule is not None and hasattr(datamodule, "reference_samples"):
            data = datamodule.reference_samples(len(samples)).float()
        metrics = {"sample/nfe": float(nfe), "sample/seconds": seconds}
        if self.compute_w2 and data is not None:
            self.last_w2 = empirical_w2(samples, data)
            metrics["sample/w2"] = self.last_w2
        path = run_directory(trainer) / "scatter" / f"{tag}.png"
        self._save(samples, data, path, title=self._title(trainer, tag, metrics))
        self.last_plot = path
        self.history.append({"step": float(trainer.global_step), **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        wandb = wandb_logger(trainer)
        if wandb is not None:
            wandb.log_image("sample/scatter", [str(path)], step=trainer.global_step, caption=[tag])
        w2 = f", W2 to held-out data {metrics['sample/w2']:.4f}" if "sample/w2" in metrics else ""
        rank_zero_info(
            f"scatter [{tag}] step {trainer.global_step}: {len(samples)} samples, NFE {nfe}, "
            f"{seconds:.2f} s{w2} -> {path}"
        )
        return path

    def _title(self, trainer: L.Trainer, tag: str, metrics: dict[str, float]) -> str:
        title = f"{tag}, step {trainer.global_step}, NFE {int(metrics['sample/nfe'])}"
        if "sample/w2" in metrics:
            title += f", W2 {metrics['sample/w2']:.3f}"
        return title

    def _save(self, samples: Tensor, data: Tensor | None, path: Path, title: str) -> None:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

        i, j = self.coords
        s = samples.reshape(len(samples), -1)
        if s.shape[1] <= max(i, j):
            raise ValueError(
                f"scatter: coordinates {self.coords} need data with > {max(i, j)} coordinates, "
                f"got samples of shape {tuple(samples.shape[1:])}"
            )
        fig = Figure(figsize=(5, 5), dpi=100)
        ax = fig.add_subplot()
        if data is not None:
            d = data.reshape(len(data), -1)
            ax.scatter(d[:, i], d[:, j], s=3, alpha=0.4, c="tab:gray", label="held-out data")
        ax.scatter(s[:, i], s[:, j], s=3, alpha=0.6, c="tab:blue", label="samples")
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
