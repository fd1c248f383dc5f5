"""Metrics of generated samples during training, against the datamodule's held-out data.

Every ``every_n_epochs`` epochs each rank draws its shard of ``num_samples`` samples (generator
seeded by ``(seed, rank)``: the same noise at every evaluation) with the chosen sampler and the
EMA weights when an :class:`~diffkit.callbacks.ema.EMA` callback is present, takes its shard of
``num_reference`` held-out samples (``datamodule.reference_samples``, identical on every rank),
and updates each metric; :meth:`~torchmetrics.Metric.compute` gathers the metric states across
ranks, so the values are those of all ``num_samples`` samples. Rank 0 logs ``eval/<name>`` and
``eval/<name>_n`` (the sample count: FID on 2k samples is not FID on 50k), any further result
entries as ``eval/<name>_<key>``, plus ``eval/nfe`` and ``eval/sample_seconds``. Data metrics
(``inputs == "data"``, e.g. ``nll``) are bound to the module's SDE and score model and evaluated
on the reference shard.
"""

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from diffkit.metrics.base import NonFiniteSamplesError
from diffkit.samplers.base import Sampler

__all__ = ["MetricEvaluation", "shard_bounds"]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of rank ``rank`` among ``world`` for ``n`` items."""
    return round(rank * n / world), round((rank + 1) * n / world)


class MetricEvaluation(Callback):
    """Evaluate sample metrics every ``every_n_epochs`` epochs (registered as ``evaluation``).

    Args:
        metrics: diffkit metrics (``SampleMetric``: ``w2``, ``fid``, ``nll``, ...), logged under
            their ``name`` (a repeated name gets a suffix ``_2``, ``_3``, ...). Any other
            torchmetrics ``Metric`` is updated with ``(generated, reference)`` and logged under
            its lower-cased class name.
        every_n_epochs: evaluate every this many epochs (0: only at the end of training).
        num_samples: generated samples in total (sharded over ranks).
        num_reference: held-out samples (default: ``num_samples``).
        sampler: overrides the module's sampler.
        seed: seed of the sampling and reference generators.
        batch_size: samples drawn per sampler call on each rank.
        use_ema: use the EMA weights when an EMA callback is present.
        on_train_end: also evaluate at the end of training.
    """

    def __init__(
        self,
        metrics: list[Metric],
        every_n_epochs: int = 10,
        num_samples: int = 1000,
        num_reference: int | None = None,
        sampler: Sampler | None = None,
        seed: int = 0,
        batch_size: int = 1000,
        use_ema: bool = True,
        on_train_end: bool = True,
    ) -> None:
        if every_n_epochs < 0 or num_samples < 2 or batch_size < 1:
            raise ValueError(
                "evaluation: need every_n_epochs >= 0, num_samples >= 2 and batch_size >= 1; got "
                f"every_n_epochs={every_n_epochs}, num_samples={num_samples}, "
                f"batch_size={batch_size}"
            )
        if num_reference is not None and num_reference < 2:
            raise ValueError(f"evaluation: num_reference must be >= 2, got {num_reference}")
        if not metrics:
            raise ValueError("evaluation: give at least one metric, e.g. metrics: [w2]")
        self.metrics: dict[str, Metric] = {}
        for metric in metrics:
            if not isinstance(metric, Metric):
                raise TypeError(
                    f"evaluation.metrics: {type(metric).__name__} is not a torchmetrics Metric; "
                    "give diffkit metrics by short name (w2, sinkhorn, fid, nll, ...)"
                )
            base = getattr(metric, "name", None) or type(metric).__name__.lower()
            name, i = base, 2
            while name in self.metrics:
                name, i = f"{base}_{i}", i + 1
            self.metrics[name] = metric
        self.every_n_epochs, self.num_samples, self.seed = every_n_epochs, num_samples, seed
        self.num_reference = num_reference or num_samples
        self.sampler, self.batch_size, self.use_ema = sampler, batch_size, use_ema
        self.at_end = on_train_end
        self.history: list[dict[str, float]] = []
        self._reference: Tensor | None = None

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs > 0
        if self.every_n_epochs and epoch % self.every_n_epochs == 0 and not (last and self.at_end):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ work
    def reference(self, trainer: L.Trainer) -> Tensor:
        """All ``num_reference`` held-out samples (same on every rank; cached)."""
        if self._reference is None:
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "reference_samples"):
                raise ValueError(
                    "evaluation: the trainer has no DiffusionDataModule with reference_samples(); "
                    "fit with a diffkit datamodule"
                )
            g = torch.Generator().manual_seed(self.seed + 1)
            self._reference = dm.reference_samples(self.num_reference, generator=g).cpu()
        return self._reference

    def generate(self, pl_module: Any, start: int, stop: int, rank: int) -> tuple[Tensor, int]:
        """Samples ``start..stop`` of the global set (drawn on this rank), and the NFE per call."""
        device = pl_module.device
        generator = torch.Generator(device=device).manual_seed(self.seed + 7919 * (rank + 1))
        out, nfe = [], 0
        for lo in range(start, stop, self.batch_size):
            hi = min(lo + self.batch_size, stop)
            cond = None
            if getattr(pl_module, "num_classes", None):
                cond = torch.arange(lo, hi, device=device) % pl_module.num_classes
            out.append(self._sample(pl_module, hi - lo, generator, cond))
            nfe = int(out[-1][1])
        samples = torch.cat([x for x, _ in out]) if out else None
        return samples, nfe

    def _sample(
        self, pl_module: Any, n: int, generator: torch.Generator, cond: Tensor | None
    ) -> tuple[Tensor, int]:
        res = pl_module.sample(
            n, sampler=self.sampler, generator=generator, cond=cond, ema=self.use_ema
        )
        return res.x, res.nfe

    def evaluate(self, trainer: L.Trainer, pl_module: Any) -> dict[str, float]:
        """Run every metric (collective: every rank must call it); returns the logged values."""
        rank, world = trainer.global_rank, trainer.world_size
        start, stop = shard_bounds(self.num_samples, rank, world)
        t0 = time.perf_counter()
        samples, nfe = self.generate(pl_module, start, stop, rank)
        seconds = time.perf_counter() - t0
        ref = self.reference(trainer)
        r0, r1 = shard_bounds(ref.shape[0], rank, world)
        ref_shard = ref[r0:r1].to(pl_module.device)
        scorer = pl_module
        if self.use_ema and hasattr(pl_module, "sampling_module"):
            scorer = pl_module.sampling_module()
        logs: dict[str, float] = {"eval/nfe": float(nfe), "eval/sample_seconds": seconds}
        for name, metric in self.metrics.items():
            metric.reset()
            metric.to(pl_module.device)
            if getattr(metric, "inputs", "samples") == "data":
                metric.bind(scorer.sde, scorer.model)
                metric.update(ref_shard)
                n = ref.shape[0]
            else:
                metric.update(samples, ref_shard)
                n = self.num_samples
            try:
                result = metric.compute()
            except NonFiniteSamplesError as err:  # raised on every rank: states are synced
                rank_zero_warn(f"evaluation step {trainer.global_step}: {err}")
                result = {"value": float("nan")}
            if not isinstance(result, dict):  # a plain torchmetrics Metric
                result = {"value": result}
            result.setdefault("n", n)
            for key, value in result.items():
                tag = f"eval/{name}" if key == "value" else f"eval/{name}_{key}"
                logs[tag] = float(torch.as_tensor(value).double().mean())
        for key, value in logs.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        self.history.append({"step": float(trainer.global_step), **logs})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(logs, step=trainer.global_step)
            shown = ", ".join(f"{k[5:]}={v:.4g}" for k, v in logs.items() if k[5:] in self.metrics)
            rank_zero_info(
                f"evaluation step {trainer.global_step}: {shown} (n={self.num_samples}, NFE {nfe}, "
                f"{seconds:.2f} s sampling)"
            )
        return logs
