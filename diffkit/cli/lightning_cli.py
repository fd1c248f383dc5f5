"""``DiffkitCLI``: LightningCLI for :class:`~diffkit.module.DiffusionModule` with short part names.

The model is configured directly (``model: {sde: vp, denoiser: {class_path: resnet, ...}}``)
and the data in subclass mode (``data: {class_path: gmm, init_args: {...}}``). Registered short
names resolve because every registry's alias classes are materialised before the parser is
built (``diffkit.registry.materialize_all``). The datamodule's ``data_shape``, ``num_classes``
and ``data_range`` are linked into the model at instantiation. The resolved config is written to
the run directory (see :mod:`diffkit.callbacks.run_summary`) with a header naming the diffkit
version and the plugin distributions in use, which also go to the W&B config.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import (
    ArgsType,
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
)
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

import diffkit
from diffkit.callbacks.run_summary import RunSummary, run_directory, wandb_logger
from diffkit.cli.run_checks import check_built_run, check_config, explain_build_error
from diffkit.data.base import DiffusionDataModule
from diffkit.errors import UserError
from diffkit.module import DiffusionModule

__all__ = ["ConfigError", "DiffkitCLI", "DiffkitSaveConfig", "installed_plugins", "plugins_in_use"]


class ConfigError(UserError):
    """A configuration that parsed but cannot be built (names the part and the cause)."""


def installed_plugins() -> dict[str, tuple[str, set[str]]]:
    """Distributions with ``diffkit.*`` entry points: name -> (version, top-level packages).

    Reads entry-point metadata only (through the registry's cached scan); imports no plugin.
    """
    from diffkit.registry import REGISTRIES, scan

    found: dict[str, tuple[str, set[str]]] = {}
    for registry in REGISTRIES.values():
        for entry in scan(registry.group):
            package = entry.target.split(":")[0].split(".")[0]
            found.setdefault(entry.dist, (entry.version, set()))[1].add(package)
    return found


def _classes(objects: Iterable[Any]) -> set[type]:
    out: set[type] = set()
    for obj in objects:
        mods = obj.modules() if hasattr(obj, "modules") and callable(obj.modules) else [obj]
        for m in mods:
            out.add(type(m))
        for attr in ("sampler", "loss", "sde"):
            part = getattr(obj, attr, None)
            if part is not None:
                out.add(type(part))
    return out


def plugins_in_use(objects: Iterable[Any]) -> dict[str, str]:
    """``{distribution: version}`` of plugins providing a class of ``objects`` (or a submodule)."""
    plugins = installed_plugins()
    if not plugins:
        return {}
    tops = {cls.__module__.split(".")[0] for cls in _classes(objects)}
    return {name: ver for name, (ver, pkgs) in sorted(plugins.items()) if pkgs & tops}


def _materialize_aliases() -> None:
    """Make registered short names visible to jsonargparse."""
    from diffkit.registry import materialize_all

    materialize_all()


def _parser_class() -> type[LightningArgumentParser]:
    from diffkit.cli.parser import DiffkitArgumentParser

    return DiffkitArgumentParser


class DiffkitSaveConfig(SaveConfigCallback):
    """Writes the resolved config to ``<run directory>/config.yaml`` (rank 0) and, with W&B,
    logs it with the diffkit version and plugins to the run's config."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        run_dir = run_directory(trainer)
        if trainer.is_global_zero:
            objects = [pl_module, trainer.datamodule, *trainer.callbacks]
            plugins = plugins_in_use([o for o in objects if o is not None])
            listed = ", ".join(f"{k}-{v}" for k, v in plugins.items()) or "none"
            rank_zero_info(f"diffkit {diffkit.__version__}; plugins: {listed}")
            text = self.parser.dump(self.config, skip_none=False)
            command = getattr(stage, "value", stage)
            header = (
                f"# diffkit {diffkit.__version__}; command: diffkit {command}\n"
                f"# diffkit plugins in use: {listed}\n"
            )
            path = run_dir / self.config_filename
            path.write_text(header + text)
            self.config_path = path
            wandb = wandb_logger(trainer)
            if wandb is not None:
                import yaml

                wandb.log_hyperparams(
                    {
                        "diffkit_version": diffkit.__version__,
                        "diffkit_plugins": plugins,
                        "config": yaml.safe_load(text),
                    }
                )
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


#: ``ckpt_path`` values Lightning resolves itself (no file to check).
_CKPT_KEYWORDS = ("last", "best", "hpc")


def _checked_ckpt_path(ckpt_path: str) -> str:
    """The checkpoint to resume from, recognised and verified before the run starts: a run or
    checkpoint directory gives its newest intact checkpoint, and a ``last.ckpt`` left behind
    by a crash its newer sibling (said on stderr)."""
    from diffkit.checkpoint import (
        CheckpointError,
        UnverifiedCheckpointWarning,
        read_checkpoint,
        resolve_resume,
    )

    text = str(ckpt_path)
    if text in _CKPT_KEYWORDS or text.startswith("registry") or "://" in text:
        return ckpt_path
    try:
        path, note = resolve_resume(text)
        with warnings.catch_warnings():  # an unverified checkpoint warns again when loaded
            warnings.simplefilter("ignore", UnverifiedCheckpointWarning)
            read_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"ckpt_path: {err}") from err
    if note:
        rank_zero_warn(note)
    return str(path)


class DiffkitCLI(LightningCLI):
    """LightningCLI with diffkit's parser, short names, linked shapes and run directory.

    Args:
        args: command-line style arguments (``["fit", "-c", "cfg.yaml", ...]``) or ``None`` for
            ``sys.argv``.
        run: run the subcommand (``False``: only parse and instantiate).
        trainer_defaults: Trainer defaults (a ``RunSummary`` callback is always added).
        parser_kwargs: forwarded to LightningCLI.
    """

    def __init__(
        self,
        args: ArgsType = None,
        *,
        run: bool = True,
        trainer_defaults: dict[str, Any] | None = None,
        parser_kwargs: dict[str, Any] | None = None,
    ) -> None:
        _materialize_aliases()
        defaults = dict(trainer_defaults or {})
        extra = defaults.get("callbacks", [])
        defaults["callbacks"] = [*(extra if isinstance(extra, list) else [extra]), RunSummary()]
        super().__init__(
            DiffusionModule,
            DiffusionDataModule,
            subclass_mode_model=False,
            subclass_mode_data=True,
            parser_class=_parser_class(),
            save_config_callback=DiffkitSaveConfig,
            trainer_defaults=defaults,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            parser_kwargs=parser_kwargs,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--num_threads",
            type=int | None,
            default=None,
            help="CPU intra-op threads (torch.set_num_threads); null keeps torch's default. "
            "1 is much faster for small models on a busy CPU.",
        )
        parser.link_arguments("data.data_shape", "model.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.data_range", "model.data_range", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check ``ckpt_path`` before LightningCLI reads its hyper-parameters."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None and config.get("ckpt_path") is not None:
            config["ckpt_path"] = _checked_ckpt_path(config["ckpt_path"])

    def before_instantiate_classes(self) -> None:
        """Check the parsed config (numbers, devices, output locations); set the threads."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_config(config)
        threads = config.get("num_threads")
        if threads is not None:
            torch.set_num_threads(threads)

    def instantiate_classes(self) -> None:
        """Build the parts, then check what needs them built (memory, batches, optimizer).

        A ValueError/LookupError raised by a part, or Lightning's MisconfigurationException
        from the Trainer, becomes a :class:`ConfigError` naming the config key.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        try:
            super().instantiate_classes()
        except UserError:
            raise
        except (ValueError, LookupError, MisconfigurationException) as err:
            raise ConfigError(explain_build_error(err, config)) from err
        training = self.subcommand in (None, "fit")
        check_built_run(self.model, self.datamodule, self.trainer, training=training)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; Lightning's MisconfigurationException (a user's setting) is a ConfigError."""
        try:
            super()._run_subcommand(subcommand)
        except MisconfigurationException as err:
            raise ConfigError(f"trainer: {err}") from err
