"""The LightningModule that trains a score model for any linear SDE, loss, denoiser and sampler.

Parts are injected (LightningCLI builds them from short names): the SDE, a denoiser *factory*
``Callable[[DenoiserSpec], Denoiser]`` (the module supplies the shapes), a loss and a sampler.
Randomness in training comes from a ``torch.Generator`` seeded by ``(seed, global rank,
global step)``, so a resumed run draws exactly the noise and times of an uninterrupted one.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.guidance import NULL_CLASS, GuidedModel
from diffkit.losses.base import Loss, LossOutput
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.samplers.base import Sampler, SampleResult
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.base import LinearSDE
from diffkit.seeding import step_generator
from diffkit.thresholding import ThresholdedModel

__all__ = ["DiffusionModule", "SharedRef", "first_non_finite", "step_generator"]

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
        data_range: ``(low, high)`` of the data values, or ``None`` when unbounded (the CLI
            links it from the datamodule; images: ``(-1, 1)``).
        thresholding: x0 thresholding when sampling (:mod:`diffkit.thresholding`): ``auto``
            (``static`` when ``data_range`` is known and the SDE acts on the data itself, else
            ``none``), ``none``, ``static`` (clip) or ``dynamic`` (Imagen).
        threshold_percentile: ``p`` of dynamic thresholding.
        threshold_max: upper bound of the dynamic scale ``s`` (``None``: unbounded).
        label_dropout: fraction of training labels replaced by the "no class" label (class-
            conditional models), which classifier-free guidance needs.
        guidance_scale: default classifier-free guidance scale ``w`` of :meth:`sample` for
            conditional models (1: the conditional model; see :mod:`diffkit.guidance`).

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
        data_range: tuple[float, float] | None = None,
        thresholding: Literal["auto", "none", "static", "dynamic"] = "auto",
        threshold_percentile: float = 0.995,
        threshold_max: float | None = None,
        label_dropout: float = 0.0,
        guidance_scale: float = 1.0,
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
        self.data_range, self.thresholding = _check_thresholding(
            sde, data_range, thresholding, threshold_percentile, threshold_max
        )
        self.threshold_percentile, self.threshold_max = float(threshold_percentile), threshold_max
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(
                f"DiffusionModule.label_dropout must lie in [0, 1), got {label_dropout}"
            )
        if label_dropout > 0 and num_classes is None:
            raise ValueError(
                "DiffusionModule.label_dropout > 0 needs class labels: set num_classes (a "
                "datamodule with conditional: true links it) or label_dropout: 0"
            )
        if not math.isfinite(guidance_scale):
            raise ValueError(f"DiffusionModule.guidance_scale must be finite, got {guidance_scale}")
        self.label_dropout, self.guidance_scale = float(label_dropout), float(guidance_scale)
        sde_name = type(sde).__name__
        _check("sde", sde_name, lambda: sde.check_data_shape(data_shape))
        _check("loss", type(loss).__name__, lambda: loss.check_sde(sde))
        _check("sampler", type(sampler).__name__, lambda: sampler.check_sde(sde))
        _check("sampler", type(sampler).__name__, lambda: sampler.times(sde))

        self.sde, self.loss, self.sampler = sde, loss, sampler
        self._record_grid_times()
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
        self.net = _build_network(denoiser, self.spec)
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

    def _record_grid_times(self) -> None:
        """A sampler grid given by file keeps its times in the saved hyper-parameters (inline,
        ``sampler.init_args.grid``), so the checkpoint samples on the same grid wherever the
        file is later; the file's path stays in the run's config.yaml."""
        times = getattr(self.sampler, "grid_times", None)
        if times is None:
            return
        for hparams in (self._hparams, getattr(self, "_hparams_initial", None)):
            spec = None if hparams is None else hparams.get("sampler")
            if isinstance(spec, dict) and isinstance(spec.get("init_args"), dict):
                spec["init_args"]["grid"] = times.tolist()

    # ------------------------------------------------------------------ training
    def _cond(self, batch: dict[str, Tensor], step: int | None = None) -> Tensor | None:
        """The labels of ``batch`` (``None`` for unconditional models); at training ``step``, a
        ``label_dropout`` fraction of them is replaced by the "no class" label."""
        y = batch.get("y") if self.num_classes is not None else None
        if y is None or step is None or self.label_dropout == 0:
            return y
        drop = torch.rand(y.shape, generator=self._generator(step, stream=2), device=y.device)
        return torch.where(drop < self.label_dropout, torch.full_like(y, NULL_CLASS), y)

    def _generator(self, step: int, stream: int) -> torch.Generator:
        return step_generator(self.seed, self.global_rank, step, stream=stream, device=self.device)

    def _loss(
        self, batch: dict[str, Tensor], generator: torch.Generator, cond: Tensor | None
    ) -> LossOutput:
        return self.loss(self.model, self.sde, batch["x"], cond, generator=generator)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step; noise, times and label dropout from (seed, rank, global step) generators.

        A denoiser with ``manual_optimization = True`` (the tensor train under ALS or
        Riemannian SGD) is trained by its own optimiser (:meth:`configure_optimizers`), whose
        ``step(closure)`` takes the step's loss as a quadratic in the denoiser outputs
        (:func:`diffkit.denoisers.tt_pool.output_quadratic`).
        """
        step = self.global_step
        generator, cond = self._generator(step, stream=0), self._cond(batch, step)
        if not self.automatic_optimization:
            out = self._manual_step(batch, generator, cond)
        else:
            out = self._loss(batch, generator, cond)
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

    def _manual_step(
        self, batch: dict[str, Tensor], generator: torch.Generator, cond: Tensor | None
    ) -> LossOutput:
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
                cond,
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
        """Stop every rank together when any rank's loss is not finite, naming that rank.

        Each rank contributes ``(flag, loss, t_min, t_max)``; with several ranks the rows are
        all-gathered (one collective per step, one host sync), so the message quotes the rank
        that saw the non-finite value, its value and its t-range, on every rank.
        """
        tt = t.detach().to(torch.float64)
        value = loss.detach().to(torch.float64).reshape(())
        row = torch.stack([(~torch.isfinite(value)).to(torch.float64), value, tt.min(), tt.max()])
        rows = row[None]
        if self._trainer is not None and self.trainer.world_size > 1:
            rows = self.trainer.strategy.all_gather(row).reshape(-1, 4)
        found = first_non_finite(rows)
        if found is not None:
            rank, bad, lo, hi = found
            raise FloatingPointError(
                f"non-finite training loss ({bad}) on rank {rank} at global step "
                f"{self.global_step}, batch index {batch_idx}, t in [{lo:.4g}, {hi:.4g}] "
                f"(raised on rank {self.global_rank}; all ranks stop together). "
                "Check the data for NaN/inf, lower the learning rate, or raise the SDE's t_min."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """``val/loss``; generator fixed by (seed, rank, batch index), comparable over epochs."""
        out = self._loss(batch, self._generator(batch_idx, stream=1), self._cond(batch))
        loss = out.loss.mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=out.loss.shape[0], sync_dist=True)
        return loss

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the diffkit version and a SHA-256 digest of every tensor (diffkit.checkpoint).

        Lightning calls this hook last, after the callbacks (EMA) have written their state.
        """
        from diffkit.checkpoint import add_digest

        add_digest(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Verify the digests before any weight is used (resume and ``load_from_checkpoint``).

        Raises:
            diffkit.checkpoint.CheckpointError: a tensor differs from the one saved.
        """
        from diffkit.checkpoint import loading_path, verify_digest

        source = loading_path()
        if source is None and self._trainer is not None:
            source = self.trainer.ckpt_path
        verify_digest(checkpoint, source or "checkpoint")

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> DiffusionModule:
        """Lightning's ``load_from_checkpoint``, after :func:`diffkit.checkpoint.inspect_file`
        recognised the file (no unpickling) and with its digests verified on load.

        Raises:
            diffkit.checkpoint.CheckpointError: not a diffkit checkpoint, or damaged.
        """
        from diffkit.checkpoint import inspect_file, load_error, loading

        if not isinstance(checkpoint_path, str | Path) or "://" in str(checkpoint_path):
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        inspect_file(checkpoint_path)
        with loading(checkpoint_path):
            try:
                return super().load_from_checkpoint(
                    checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
                )
            except pickle.UnpicklingError as err:  # e.g. weights_only refusing a global
                raise load_error(checkpoint_path, err) from err

    @classmethod
    def load_for_sampling(
        cls, path: str | Path, map_location: str = "cpu", *, sampler: Sampler | None = None
    ) -> DiffusionModule:
        """The module of a ``diffkit fit`` checkpoint, for sampling, in eval mode.

        The file is recognised and its digests verified
        (:func:`diffkit.checkpoint.read_checkpoint`). Only what sampling uses is built: the
        SDE, the denoiser, the loss (it fixes the parameterisation) and the saved sampler unless
        ``sampler`` replaces it; the optimizer and LR scheduler are not built, so a plugin that
        is now broken or uninstalled matters only when its part is needed.

        Raises:
            diffkit.checkpoint.CheckpointError: not a verified diffkit checkpoint, or a needed
                part cannot be built (the registry's one-line error).
        """
        from lightning.pytorch.cli import instantiate_module

        from diffkit.checkpoint import CheckpointError, check_saved_part, read_checkpoint

        checkpoint = read_checkpoint(path, map_location="cpu")
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        if hparams.pop("_instantiator", None) is None:
            raise CheckpointError(
                f"{path} was saved by a DiffusionModule built in Python, whose parts (sde, "
                "denoiser, ...) are not in the checkpoint; load it in Python with "
                "DiffusionModule.load_from_checkpoint(path, sde=..., denoiser=...)"
            )
        for unused in ("_class_path", "optimizer", "lr_scheduler"):
            hparams.pop(unused, None)
        if sampler is not None:
            hparams["sampler"] = None
        for part in ("sde", "denoiser", "loss", "sampler"):
            value = hparams.get(part)
            if isinstance(value, dict) and isinstance(value.get("class_path"), str):
                check_saved_part(path, part, part, value["class_path"])
        try:
            module = instantiate_module(cls, hparams)
        except Exception as err:  # jsonargparse reports a multi-line parse error
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: the model cannot be rebuilt from it: {reason}") from err
        try:
            module.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{path}: its weights do not fit the model: {reason}") from err
        if sampler is not None:
            module.sampler = sampler
        return module.to(map_location).eval()

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
        guidance_scale: float | None = None,
    ) -> SampleResult:
        """Draw ``n`` samples ``(n, *data_shape)`` in eval mode (EMA weights when present).

        Args:
            sampler: overrides the module's sampler.
            generator: source of all randomness (default: seeded with ``seed``).
            cond: class labels ``(n,)`` for conditional models.
            u_T: initial states ``(n, *state_shape)``.
            ema: sample with the EMA weights when an EMA callback offers them; ``False``: this
                module's live weights.
            guidance_scale: classifier-free guidance scale with ``cond`` (default: the module's
                ``guidance_scale``); each guided evaluation counts 2 NFE.

        The score model is the module's, guided (``cond`` with a scale other than 1) and then
        x0-thresholded (``thresholding``), for every sampler.
        """
        if n < 1:
            raise ValueError(f"sample: n must be >= 1, got {n}")
        module = self.sampling_module() if ema else self
        sampler = sampler or self.sampler
        device = next(module.parameters()).device
        dtype = next(module.parameters()).dtype
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
        model = self.score_model(module.model, cond, guidance_scale)
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

    def score_model(
        self, model: Any, cond: Tensor | None = None, guidance_scale: float | None = None
    ) -> Any:
        """``model`` (a ``Parameterization``) as the score model sampling uses: labels ``cond``
        ``(n,)`` bound or guided (:class:`~diffkit.guidance.GuidedModel`), then x0-thresholded
        (:class:`~diffkit.thresholding.ThresholdedModel`) when ``thresholding`` is on."""
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        if cond is None and scale != 1.0 and self.num_classes is not None:
            raise ValueError(
                f"guidance_scale={scale} needs class labels: pass cond (e.g. --class_label)"
            )
        out: Any = model
        if cond is not None:
            cond = cond.to(next(model.parameters()).device)
            out = GuidedModel(model, cond, scale) if scale != 1.0 else model.conditioned(cond)
        if self.thresholding != "none" and self.data_range is not None:
            out = ThresholdedModel(
                out,
                self.thresholding,  # type: ignore[arg-type]
                self.data_range,
                self.threshold_percentile,
                self.threshold_max,
            )
        return out


def _check_thresholding(
    sde: LinearSDE,
    data_range: tuple[float, float] | None,
    thresholding: str,
    percentile: float,
    max_scale: float | None,
) -> tuple[tuple[float, float] | None, str]:
    """Validate the thresholding options; resolve ``auto``. Returns ``(data_range, kind)``."""
    if thresholding not in ("auto", "none", "static", "dynamic"):
        raise ValueError(
            "DiffusionModule.thresholding must be 'auto', 'none', 'static' or 'dynamic', "
            f"got {thresholding!r}"
        )
    if data_range is not None:
        if len(data_range) != 2 or not float(data_range[0]) < float(data_range[1]):
            raise ValueError(
                f"DiffusionModule.data_range must be (low, high) with low < high, got {data_range}"
            )
        data_range = (float(data_range[0]), float(data_range[1]))
    if not 0.0 < percentile <= 1.0:
        raise ValueError(
            f"DiffusionModule.threshold_percentile must lie in (0, 1], got {percentile}"
        )
    if max_scale is not None and max_scale < 1.0:
        raise ValueError(f"DiffusionModule.threshold_max must be >= 1 or null, got {max_scale}")
    if thresholding == "auto":
        on = data_range is not None and sde.block == 1
        return data_range, "static" if on else "none"
    if thresholding != "none":
        if data_range is None:
            raise ValueError(
                f"DiffusionModule.thresholding={thresholding!r} needs model.data_range (the "
                "datamodule's, e.g. [-1, 1] for images): set it, or thresholding: none"
            )
        if sde.block != 1:
            raise ValueError(
                f"DiffusionModule.thresholding={thresholding!r} needs an SDE on the data itself; "
                f"{type(sde).__name__} has (position, velocity) states: set thresholding: none"
            )
    return data_range, thresholding


def first_non_finite(rows: Tensor) -> tuple[int, float, float, float] | None:
    """The first rank whose row ``(flag, loss, t_min, t_max)`` of ``rows`` ``(world, 4)`` has
    ``flag > 0``, as ``(rank, loss, t_min, t_max)``; ``None`` when every loss was finite."""
    for rank, (flag, value, lo, hi) in enumerate(rows.detach().cpu().tolist()):
        if flag > 0:
            return rank, value, lo, hi
    return None


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _build_network(factory: Callable[[DenoiserSpec], Denoiser], spec: DenoiserSpec) -> Denoiser:
    """``factory(spec)``, refused with the estimate when its float32 weights alone would not
    fit in the available host memory (sized first on the meta device, which allocates nothing)."""
    from diffkit.memory import available_memory, format_bytes, network_parameters

    try:
        name, count = network_parameters(factory, spec)
    except Exception:  # a network that cannot be built on meta is sized by building it
        return _named(factory, spec)
    have = available_memory()
    if have is not None and count * 4 > have:
        raise ValueError(
            f"model.denoiser ({name}): its {count:.3g} parameters need {format_bytes(count * 4)} "
            f"as float32 weights, and {format_bytes(have)} of memory is available; make the "
            "network smaller (width, depth, channels)"
        )
    return _named(factory, spec)


def _named(factory: Callable[[DenoiserSpec], Denoiser], spec: DenoiserSpec) -> Denoiser:
    """``factory(spec)``; a ValueError (arguments the network rejects) names ``model.denoiser``."""
    try:
        return factory(spec)
    except ValueError as err:
        raise ValueError(f"model.denoiser: {err}") from err


def _check(part: str, name: str, check: Callable[[], None]) -> None:
    try:
        check()
    except ValueError as err:
        raise ValueError(f"model.{part} ({name}) is incompatible with this setup: {err}") from err
