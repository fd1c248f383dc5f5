"""The LightningModule that trains a score model for any linear SDE, loss, denoiser and sampler.

Parts are injected (LightningCLI builds them from short names): the SDE, a denoiser *factory*
``Callable[[DenoiserSpec], Denoiser]`` (the module supplies the shapes), a loss and a sampler.
Randomness in training comes from a ``torch.Generator`` seeded by ``(seed, global rank,
global step)``, so a resumed run draws exactly the noise and times of an uninterrupted one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.losses.base import Loss, LossOutput
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.samplers.base import Sampler, SampleResult
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.base import LinearSDE
from diffkit.seeding import step_generator

__all__ = ["DiffusionModule", "SharedRef", "step_generator"]

#: Number of equal-width time bins (fractions of ``T``) the training loss is also logged in.
LOSS_TIME_BINS = 4


class SharedRef:
    """A value that deep copies share instead of copying (``copy.deepcopy`` returns ``self``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict) -> SharedRef:
        return self


class DiffusionModule(L.LightningModule):
    """Trains ``denoiser`` under ``sde`` with ``loss``; samples with ``sampler``.

    Args:
        sde: the forward process.
        denoiser: factory of the raw network, called with a :class:`DenoiserSpec`.
        loss: training loss (default: ``dsm``, eps target).
        sampler: default sampler of :meth:`sample` and of sampling callbacks (default: ``ddim``).
        data_shape: shape of one datum (the CLI links it from the datamodule).
        num_classes: number of classes for conditioning on ``batch["y"]``, or ``None``.
        optimizer: optimizer factory ``params -> Optimizer``.
        lr_scheduler: scheduler factory ``optimizer -> LRScheduler`` (stepped every step), or None.
        seed: base seed of the per-(rank, step) training generators and of default sampling.

    Attributes:
        sde, net (raw denoiser), model (the score model, a ``Parameterization``), loss, sampler.
    """

    def __init__(
        self,
        sde: LinearSDE,
        denoiser: Callable[[DenoiserSpec], Denoiser],
        loss: Loss | None = None,
        sampler: Sampler | None = None,
        data_shape: tuple[int, ...] = (2,),
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._bins: Tensor | None = None  # (sums, counts) of the loss per t-bin, this epoch
        self._save_plain_hyperparameters()
        from diffkit.denoisers.parameterization import Parameterization

        data_shape = tuple(int(d) for d in data_shape)
        if not data_shape or any(d < 1 for d in data_shape):
            raise ValueError(f"DiffusionModule.data_shape must be positive sizes, got {data_shape}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"DiffusionModule.num_classes must be >= 1 or None, got {num_classes}")
        if loss is None:
            loss = DenoisingScoreMatching()
        if sampler is None:
            sampler = DDIM()
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"DiffusionModule.sde must be a LinearSDE, got {type(sde).__name__}")
        if not isinstance(loss, Loss):
            raise TypeError(f"DiffusionModule.loss must be a Loss, got {type(loss).__name__}")
        if not isinstance(sampler, Sampler):
            raise TypeError(
                f"DiffusionModule.sampler must be a Sampler, got {type(sampler).__name__}"
            )
        sde_name = type(sde).__name__
        _check("sde", sde_name, lambda: sde.check_data_shape(data_shape))
        _check("loss", type(loss).__name__, lambda: loss.check_sde(sde))
        _check("sampler", type(sampler).__name__, lambda: sampler.check_sde(sde))

        self.sde, self.loss, self.sampler = sde, loss, sampler
        self.data_shape, self.num_classes, self.seed = data_shape, num_classes, int(seed)
        # Held by reference: deep copies (EMA's averaged module) share the factories, which
        # may hold unpicklable state (jsonargparse builds them).
        self._factories = SharedRef((optimizer, lr_scheduler))
        state_shape = tuple(sde.state_shape(data_shape))
        output_kind = getattr(loss, "output_kind", "state")
        self.spec = DenoiserSpec(
            data_shape=data_shape,
            state_shape=state_shape,
            output_shape=data_shape if output_kind == "velocity" else state_shape,
            num_classes=num_classes,
        )
        self.net = denoiser(self.spec)
        if not isinstance(self.net, torch.nn.Module):
            raise TypeError(
                f"DiffusionModule.denoiser must build an nn.Module, got {type(self.net).__name__}"
            )
        # Denoisers with their own non-gradient optimiser (tensor train: ALS, Riemannian SGD).
        self.automatic_optimization = not getattr(self.net, "manual_optimization", False)
        self.model = Parameterization(
            sde,
            self.net,
            target=getattr(loss, "target", "eps"),
            velocity_only=output_kind == "velocity",
            preconditioning=getattr(loss, "preconditioning", "none"),
            sigma_data=getattr(loss, "sigma_data", 0.5),
            mixed_score=getattr(loss, "mixed_score", False),
            residual=getattr(loss, "residual", "none"),
        )

    def _save_plain_hyperparameters(self) -> None:
        """Store hyper-parameters that ``torch.load(weights_only=True)`` can read.

        Under LightningCLI they are the parsed config (``class_path``/``init_args`` dicts), from
        which ``load_from_checkpoint`` rebuilds every part. A module built directly from objects
        keeps only its plain arguments; pass the parts again to ``load_from_checkpoint``.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        for hparams in (self._hparams, getattr(self, "_hparams_initial", None)):
            if hparams is None:
                continue
            for key in [k for k, v in hparams.items() if not _is_plain(v)]:
                del hparams[key]

    # ------------------------------------------------------------------ training
    def _cond(self, batch: dict[str, Tensor]) -> Tensor | None:
        return batch.get("y") if self.num_classes is not None else None

    def _generator(self, step: int, stream: int) -> torch.Generator:
        return step_generator(self.seed, self.global_rank, step, stream=stream, device=self.device)

    def _loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> LossOutput:
        x0 = batch["x"]
        return self.loss(self.model, self.sde, x0, self._cond(batch), generator=generator)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step; noise and times from the (seed, rank, global step) generator.

        A denoiser with ``manual_optimization = True`` (the tensor train under ALS or
        Riemannian SGD) is trained by its own optimiser (:meth:`configure_optimizers`), whose
        ``step(closure)`` takes the step's loss as a quadratic in the denoiser outputs
        (:func:`diffkit.denoisers.tt_pool.output_quadratic`).
        """
        generator = self._generator(self.global_step, stream=0)
        if not self.automatic_optimization:
            out = self._manual_step(batch, generator)
        else:
            out = self._loss(batch, generator)
        loss = out.loss.mean()
        self._raise_if_not_finite(loss, out.t, batch_idx)
        bs = out.loss.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        self._log_binned(out)
        if (
            self._trainer is not None
            and self.trainer.optimizers
            and "lr" in self.trainer.optimizers[0].param_groups[0]  # not ALS
            and self.global_step % max(self.trainer.log_every_n_steps, 1) == 0
        ):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", float(lr), on_step=True, on_epoch=False, batch_size=bs)
        for key, value in out.logs.items():
            self.log(f"train/{key}", value.float().mean(), on_step=False, on_epoch=True)
        return loss

    def _manual_step(self, batch: dict[str, Tensor], generator: torch.Generator) -> LossOutput:
        from diffkit.denoisers.tt_pool import output_quadratic

        optimizer = self.optimizers()
        hessian = bool(getattr(optimizer.optimizer, "needs_hessian", False))

        def closure():
            return output_quadratic(
                self.net,
                self.model,
                self.loss,
                self.sde,
                batch["x"],
                self._cond(batch),
                generator,
                hessian=hessian,
            )

        pool = optimizer.step(closure=closure)
        return LossOutput(loss=pool.per_sample, t=pool.t, logs=pool.logs)

    def _log_binned(self, out: LossOutput) -> None:
        """Accumulate per-sample losses in ``LOSS_TIME_BINS`` bins of t (no host sync); the
        bin means are logged once per epoch by :meth:`on_train_epoch_end`."""
        frac = (out.t.detach() / float(self.sde.T)).clamp(0.0, 1.0)
        idx = (frac * LOSS_TIME_BINS).long().clamp(max=LOSS_TIME_BINS - 1)
        per = out.loss.detach().to(torch.float64)
        if self._bins is None or self._bins.device != per.device:
            self._bins = torch.zeros(2, LOSS_TIME_BINS, dtype=torch.float64, device=per.device)
        self._bins[0].index_add_(0, idx, per)
        self._bins[1].index_add_(0, idx, torch.ones_like(per))

    def on_train_epoch_end(self) -> None:
        """Log the epoch's loss per t-bin (sums and counts reduced over ranks)."""
        if self._bins is None:
            return
        bins = self._bins
        if self._trainer is not None and self.trainer.world_size > 1:
            bins = self.trainer.strategy.reduce(bins.clone(), reduce_op="sum")
        sums, counts = bins.tolist()
        self._bins = None
        for b, (total, n) in enumerate(zip(sums, counts, strict=True)):
            if n:
                lo, hi = b / LOSS_TIME_BINS, (b + 1) / LOSS_TIME_BINS
                self.log(f"train/loss_t[{lo:.2f}-{hi:.2f}]", total / n, rank_zero_only=True)

    def _raise_if_not_finite(self, loss: Tensor, t: Tensor, batch_idx: int) -> None:
        bad = (~torch.isfinite(loss.detach())).to(torch.float32)  # one host sync below
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")  # every rank raises together
        if bad.item() > 0:
            tt = t.detach().double()
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, "
                f"batch index {batch_idx}, t in [{tt.min().item():.4g}, {tt.max().item():.4g}] "
                f"(rank {self.global_rank}; a rank saw a non-finite loss, all stop). "
                "Check the data for NaN/inf, lower the learning rate, or raise the SDE's t_min."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """``val/loss``; generator fixed by (seed, rank, batch index), comparable over epochs."""
        out = self._loss(batch, self._generator(batch_idx, stream=1))
        loss = out.loss.mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=out.loss.shape[0], sync_dist=True)
        return loss

    @property
    def optimizer_factory(self) -> OptimizerCallable:
        """The optimizer factory ``params -> Optimizer``."""
        return self._factories.value[0]

    @optimizer_factory.setter
    def optimizer_factory(self, factory: OptimizerCallable) -> None:
        self._factories = SharedRef((factory, self._factories.value[1]))

    @property
    def lr_scheduler_factory(self) -> LRSchedulerCallable | None:
        """The scheduler factory ``optimizer -> LRScheduler`` or ``None``."""
        return self._factories.value[1]

    @lr_scheduler_factory.setter
    def lr_scheduler_factory(self, factory: LRSchedulerCallable | None) -> None:
        self._factories = SharedRef((self._factories.value[0], factory))

    def configure_optimizers(self) -> Any:
        if not self.automatic_optimization:  # the denoiser's own optimiser (no scheduler)
            return self.net.make_optimizer()
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ sampling
    def sampling_module(self) -> DiffusionModule:
        """The module whose ``.model`` sampling uses: EMA weights when a callback offers them.

        A callback exposing ``averaged_module() -> LightningModule | None`` (diffkit's EMA) is
        asked first; otherwise this module.
        """
        trainer = self._trainer
        if trainer is not None:
            for callback in trainer.callbacks:
                get = getattr(callback, "averaged_module", None)
                if callable(get):
                    module = get()
                    if module is not None:
                        return module
        return self

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
        cond: Tensor | None = None,
        u_T: Tensor | None = None,
        ema: bool = True,
    ) -> SampleResult:
        """Draw ``n`` samples ``(n, *data_shape)`` in eval mode (EMA weights when present).

        Args:
            sampler: overrides the module's sampler.
            generator: source of all randomness (default: seeded with ``seed``).
            cond: class labels ``(n,)`` for conditional models.
            u_T: initial states ``(n, *state_shape)``.
            ema: sample with the EMA weights when an EMA callback offers them; ``False``: this
                module's live weights.
        """
        if n < 1:
            raise ValueError(f"sample: n must be >= 1, got {n}")
        module = self.sampling_module() if ema else self
        sampler = sampler or self.sampler
        device = next(module.parameters()).device
        dtype = next(module.parameters()).dtype
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
        model: Any = module.model
        if cond is not None:
            model = module.model.conditioned(cond.to(device))
        was_training = module.training
        module.eval()
        try:
            return sampler.sample(
                model,
                module.sde,
                (n, *self.data_shape),
                generator=generator,
                u_T=u_T,
                device=device,
                dtype=dtype,
            )
        finally:
            module.train(was_training)


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _check(part: str, name: str, check: Callable[[], None]) -> None:
    try:
        check()
    except ValueError as err:
        raise ValueError(f"model.{part} ({name}) is incompatible with this setup: {err}") from err
