"""The kinds of parts diffkit registers, and one :class:`Registry` instance per kind.

Every base type is a ``"module:attr"`` string, imported only when a target is checked, so
``import diffkit.registry`` imports neither torch nor any plugin. Each kind has one entry-point
group (``diffkit.<kind>s``) and one alias module (``diffkit.aliases.<kind>s``).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffkit.registry.builtins import BUILTINS
from diffkit.registry.registry import Registry

__all__ = [
    "CALLBACKS",
    "DATAMODULES",
    "DENOISERS",
    "KINDS",
    "LOSSES",
    "METRICS",
    "REGISTRIES",
    "SAMPLERS",
    "SDES",
    "KindSpec",
]


@dataclass(frozen=True)
class KindSpec:
    """One kind: ``kind`` (singular), ``base`` (``"module:attr"``) and ``plural``, which names
    the entry-point ``group`` and the ``alias_module`` holding its short-name classes."""

    kind: str
    base: str
    plural: str

    @property
    def group(self) -> str:
        return f"diffkit.{self.plural}"

    @property
    def alias_module(self) -> str:
        return f"diffkit.aliases.{self.plural}"


KINDS: tuple[KindSpec, ...] = (
    KindSpec("sde", "diffkit.sdes.base:LinearSDE", "sdes"),
    KindSpec("denoiser", "diffkit.denoisers.base:Denoiser", "denoisers"),
    KindSpec("sampler", "diffkit.samplers.base:Sampler", "samplers"),
    KindSpec("loss", "diffkit.losses.base:Loss", "losses"),
    KindSpec("metric", "torchmetrics:Metric", "metrics"),
    KindSpec("datamodule", "diffkit.data.base:DiffusionDataModule", "datamodules"),
    KindSpec("callback", "lightning.pytorch.callbacks:Callback", "callbacks"),
)


def _make(spec: KindSpec) -> Registry:
    return Registry(
        spec.kind,
        spec.base,
        group=spec.group,
        alias_module=spec.alias_module,
        builtins=BUILTINS.setdefault(spec.kind, {}),
    )


REGISTRIES: dict[str, Registry] = {spec.kind: _make(spec) for spec in KINDS}
SDES: Registry = REGISTRIES["sde"]
DENOISERS: Registry = REGISTRIES["denoiser"]
SAMPLERS: Registry = REGISTRIES["sampler"]
LOSSES: Registry = REGISTRIES["loss"]
METRICS: Registry = REGISTRIES["metric"]
DATAMODULES: Registry = REGISTRIES["datamodule"]
CALLBACKS: Registry = REGISTRIES["callback"]


def plugin_distributions() -> list[tuple[str, str]]:
    """``(distribution, version)`` of every installed distribution providing diffkit parts.

    Reads metadata only (no plugin is imported); empty when autoloading is disabled. The CLI
    logs it (``diffkit plugins: diffkit-example-0.1.0``) and records it in saved configs.
    """
    from diffkit.registry.entry_points import scan

    return sorted({(p.dist, p.version) for spec in KINDS for p in scan(spec.group)})
