"""Base class of diffkit's metrics: torchmetrics ``Metric`` with a dict result that reports ``n``.

Every metric returns ``{"value": ..., "n": ..., ...}`` from :meth:`SampleMetric.compute`, where
``n`` is the number of generated samples (or of evaluated data points) the value was computed on:
FID on 2k samples is not FID on 50k, so ``n`` is always logged next to the value
(``eval/<name>`` and ``eval/<name>_n``, see :class:`diffkit.callbacks.evaluation.MetricEvaluation`).

State is declared with ``add_state`` (as in torchmetrics), so reset, DDP synchronisation and
checkpointing are generic: sample sets are ``cat`` states, gathered across ranks before
:meth:`compute`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["NonFiniteSamplesError", "SampleMetric", "count_non_finite", "flatten_samples"]


class NonFiniteSamplesError(ValueError):
    """Samples (or data) with NaN/inf entries reached a metric: no number is reported for them."""


def flatten_samples(x: Tensor) -> Tensor:
    """Samples ``(n, *S)`` as float64 rows ``(n, D)``."""
    return x.reshape(x.shape[0], -1).to(torch.float64)


def count_non_finite(x: Tensor) -> int:
    """Number of samples of ``x`` ``(n, *S)`` with at least one NaN or infinite entry."""
    return int((~torch.isfinite(x.detach().reshape(x.shape[0], -1))).any(1).sum())


class SampleMetric(Metric):
    """Base class: ``update(generated, reference)`` then ``compute() -> dict``.

    Class attributes:
        name: the short name used for logging (``eval/<name>``).
        inputs: ``"samples"`` (compares generated samples with reference samples) or ``"data"``
            (evaluates a model on held-out data, e.g. the likelihood; ``update(data)``).

    Subclasses that compare sample sets call :meth:`_add_sample_states` in ``__init__`` and
    implement :meth:`_compute_pair` on the gathered float64 rows.
    """

    name: ClassVar[str] = "metric"
    inputs: ClassVar[Literal["samples", "data"]] = "samples"
    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # [non-finite generated, generated, non-finite reference, reference] samples seen
        self.add_state("non_finite", default=torch.zeros(4, dtype=torch.long), dist_reduce_fx="sum")

    def _add_sample_states(self) -> None:
        self.add_state("generated", default=[], dist_reduce_fx="cat")
        self.add_state("reference", default=[], dist_reduce_fx="cat")

    def _count(self, generated: Tensor | None, reference: Tensor | None) -> None:
        """Add the non-finite and total sample counts of a shard to ``non_finite``."""
        for i, x in ((0, generated), (2, reference)):
            if x is not None and x.shape[0]:
                self.non_finite[i] += count_non_finite(x)
                self.non_finite[i + 1] += x.shape[0]

    def _raise_if_non_finite(self, data: str = "reference samples") -> None:
        """Raise :class:`NonFiniteSamplesError` if any sample seen (on any rank) was not finite.

        Call at the start of ``compute`` (the states are synchronised there); ``data`` names
        what the reference slot holds.
        """
        counts = [int(c) for c in self.non_finite.tolist()]
        slots = (
            ("generated samples", "check the sampler (steps, t_min) or the model", counts[:2]),
            (data, "check the data", counts[2:]),
        )
        for label, fix, (bad, total) in slots:
            if bad:
                raise NonFiniteSamplesError(
                    f"{self.name}: {bad} of {total} {label} are not finite (NaN or inf); no "
                    f"value is reported for them: {fix}"
                )

    def update(self, generated: Tensor | None = None, reference: Tensor | None = None) -> None:
        """Append a shard of generated samples and/or reference samples, each ``(n, *S)``."""
        if generated is None and reference is None:
            raise ValueError(f"{type(self).__name__}.update needs generated and/or reference")
        self._count(generated, reference)
        if generated is not None:
            self.generated.append(flatten_samples(generated.detach()))
        if reference is not None:
            self.reference.append(flatten_samples(reference.detach()))

    def _gathered(self) -> tuple[Tensor, Tensor]:
        gen = dim_zero_cat(self.generated) if len(self.generated) else None
        ref = dim_zero_cat(self.reference) if len(self.reference) else None
        if gen is None or gen.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 generated samples")
        if ref is None or ref.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 reference samples")
        if gen.shape[1] != ref.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: generated samples have {gen.shape[1]} dimensions but "
                f"reference samples have {ref.shape[1]}; compare samples of the same data shape"
            )
        return gen, ref

    def compute(self) -> dict[str, Tensor]:
        """``{"value", "n" (generated), "n_reference", ...}`` on the gathered samples.

        Raises:
            NonFiniteSamplesError: some samples were not finite (their number is named).
        """
        self._raise_if_non_finite()
        gen, ref = self._gathered()
        out = self._compute_pair(gen, ref)
        out["n"] = torch.tensor(gen.shape[0])
        out["n_reference"] = torch.tensor(ref.shape[0])
        return out

    def _compute_pair(self, generated: Tensor, reference: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
