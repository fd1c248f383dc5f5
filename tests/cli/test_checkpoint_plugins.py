"""A checkpoint trained with plugin parts that are later uninstalled or broken.

The run uses a sampler, a callback and a metric of a real (fake) plugin distribution. Sampling
needs the weights, the SDE, the denoiser and the loss, not the plugin: without the plugin it
works with ``--sampler``; without ``--sampler`` the missing saved sampler is reported in one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffkit.cli.main import main
from diffkit.testing.plugins import fake_distribution, remove_distribution

#: The run's callbacks besides ``ModelCheckpoint``: the plugin's callback and metric.
PLUGIN_CALLBACKS = """\
    - class_path: plugcb
    - class_path: evaluation
      init_args: {metrics: [plugw2], every_n_epochs: 0, num_samples: 8}
"""

ENTRY_POINTS = {
    "diffkit.samplers": {"plugddim": "plugparts.samplers:PlugDDIM"},
    "diffkit.callbacks": {"plugcb": "plugparts.callbacks:PlugCallback"},
    "diffkit.metrics": {"plugw2": "plugparts.metrics:PlugW2"},
}
MODULES = {
    "plugparts.samplers": "from diffkit.samplers.ddim import DDIM\n\n\nclass PlugDDIM(DDIM):\n"
    "    pass\n",
    "plugparts.callbacks": "from lightning.pytorch.callbacks import Callback\n\n\n"
    "class PlugCallback(Callback):\n    def state_dict(self):\n        return {'seen': 1}\n",
    "plugparts.metrics": "from diffkit.metrics.wasserstein import W2\n\n\nclass PlugW2(W2):\n"
    "    name = 'plugw2'\n",
}


@pytest.fixture(scope="module")
def plugin_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_fit_yaml, fit_tiny_run
) -> Path:
    root = tmp_path_factory.mktemp("plugrun")
    site = fake_distribution(root, "plugparts", ENTRY_POINTS, MODULES)
    try:
        config = tiny_fit_yaml(sampler="plugddim", callbacks=PLUGIN_CALLBACKS)
        ckpt = fit_tiny_run(root, config)
    finally:
        remove_distribution(site)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["hyper_parameters"]["sampler"]["class_path"].endswith("plugddim")
    assert any(key.startswith("PlugCallback") for key in saved["callbacks"])
    return ckpt


@pytest.fixture(params=["uninstalled", "broken"])
def plugin_state(request, tmp_path):
    """No plugin at all, or the plugin installed with modules that fail to import."""
    if request.param == "uninstalled":
        yield request.param
        return
    broken = {name: "raise ImportError('plugparts is broken')\n" for name in MODULES}
    site = fake_distribution(tmp_path, "plugparts", ENTRY_POINTS, broken)
    try:
        yield request.param
    finally:
        remove_distribution(site)


@pytest.mark.slow
def test_sample_with_another_sampler_needs_no_plugin(plugin_checkpoint, plugin_state, tmp_path):
    out = tmp_path / "s"
    argv = ["sample", str(plugin_checkpoint), "--sampler", "ddim", "--sampler.steps", "3"]
    assert main([*argv, "--num_samples", "5", "--output", str(out), "--metrics", "[]"]) == 0
    saved = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert saved["x"].shape == (5, 2) and saved["sampler"] == "DDIM" and saved["nfe"] == 3


@pytest.mark.slow
def test_missing_saved_sampler_is_one_line_naming_it(
    plugin_checkpoint, plugin_state, tmp_path, capsys
):
    code = main(["sample", str(plugin_checkpoint), "--output", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert str(plugin_checkpoint) in line and "sampler 'plugddim'" in line
    assert "--sampler ddim" in line
    if plugin_state == "broken":
        assert "plugparts is broken" in line and "failed to import" in line
    else:
        assert "Unknown sampler 'plugddim'" in line
