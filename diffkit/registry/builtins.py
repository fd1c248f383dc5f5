"""Every built-in part: kind -> short name -> ``"module:attribute"``.

A static table, so that listing parts and resolving names imports nothing heavy; a target is
imported only when its name is used. ``tests/test_builtins.py`` checks that each target imports
and is of its kind's base type.
"""

from __future__ import annotations

BUILTINS: dict[str, dict[str, str]] = {
    "sde": {
        "vp": "diffkit.sdes.vp:VPSDE",
        "cld": "diffkit.sdes.cld:CLDSDE",
        "ve": "diffkit.sdes.ve:VESDE",
        "blur": "diffkit.sdes.blur:BlurSDE",
    },
    "denoiser": {
        "resnet": "diffkit.denoisers.resnet:ResNetMLP",
        "unet": "diffkit.denoisers.unet:UNet",
        "unet_cifar10": "diffkit.denoisers.unet:unet_cifar10",
        "unet_small": "diffkit.denoisers.unet:unet_small",
        "tensor_train": "diffkit.denoisers.tensor_train:TensorTrain",
    },
    "sampler": {
        "euler_maruyama": "diffkit.samplers.euler_maruyama:EulerMaruyama",
        "ddim": "diffkit.samplers.ddim:DDIM",
        "ei": "diffkit.samplers.exponential_integrator:ExponentialIntegrator",
        "heun": "diffkit.samplers.heun:Heun",
        "deis": "diffkit.samplers.deis:DEIS",
        "gddim": "diffkit.samplers.gddim:GDDIM",
        "pc": "diffkit.samplers.pc:PredictorCorrector",
        "dpm_solver": "diffkit.samplers.dpm_solver:DPMSolver",
        "unipc": "diffkit.samplers.unipc:UniPC",
    },
    "loss": {
        "dsm": "diffkit.losses.dsm:DenoisingScoreMatching",
        "hsm": "diffkit.losses.hsm:HybridScoreMatching",
    },
    "metric": {
        "w2": "diffkit.metrics.wasserstein:W2",
        "sinkhorn": "diffkit.metrics.wasserstein:Sinkhorn",
        "gaussian_w2": "diffkit.metrics.gaussian_w2:GaussianW2",
        "mmd": "diffkit.metrics.mmd:MMD",
        "fid": "diffkit.metrics.fid:FID",
        "kid": "diffkit.metrics.fid:KID",
        "nll": "diffkit.metrics.nll:NLL",
    },
    "datamodule": {
        "gmm": "diffkit.data.gmm:GaussianMixtureDataModule",
        "toy2d": "diffkit.data.toy2d:Toy2DDataModule",
        "digits": "diffkit.data.images:DigitsDataModule",
        "shapes": "diffkit.data.shapes:ShapesDataModule",
        "mnist": "diffkit.data.images:MNISTDataModule",
        "fashion_mnist": "diffkit.data.images:FashionMNISTDataModule",
        "cifar10": "diffkit.data.images:CIFAR10DataModule",
        "image_folder": "diffkit.data.images:ImageFolderDataModule",
        "gaussian": "diffkit.data.gaussian:GaussianDataModule",
        "swiss_roll_3d": "diffkit.data.sklearn_vectors:SwissRoll3DDataModule",
        "digits64": "diffkit.data.sklearn_vectors:Digits64DataModule",
        "power": "diffkit.data.uci:PowerDataModule",
        "gas": "diffkit.data.uci:GasDataModule",
        "hepmass": "diffkit.data.uci:HepmassDataModule",
    },
    "callback": {
        "scatter": "diffkit.callbacks.scatter:ScatterPlot",
        "ema": "diffkit.callbacks.ema:EMA",
        "sample_grid": "diffkit.callbacks.sample_grid:SampleGrid",
        "evaluation": "diffkit.callbacks.evaluation:MetricEvaluation",
    },
}
