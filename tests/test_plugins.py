"""A method from outside the package: registered through the entry-point group ``equireg.methods``,
seen by the registry, the CLI and the workflow, trained and evaluated through the smoke preset."""

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import copy_workflow

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tiny-translation"
        version = "0.1"

        [project.entry-points."equireg.methods"]
        tiny_translation = "tiny_translation:build"
        """,
    "tiny_translation.py": '''
        """A method of one's own: a small CNN that predicts one translation per pair."""
        import torch
        from torch import nn

        from equireg.wrappers import DisplacementField


        class Translation(nn.Module):
            def __init__(self, dimension, channels=8):
                super().__init__()
                conv = {2: nn.Conv2d, 3: nn.Conv3d}[dimension]
                self.net = nn.Sequential(conv(2, channels, 3, padding=1), nn.ReLU(),
                                         conv(channels, dimension, 3, padding=1))

            def forward(self, moving, fixed):
                axes = tuple(range(2, moving.dim()))
                shift = self.net(torch.cat([moving, fixed], 1)).mean(axes, keepdim=True) / 10
                return shift.expand(-1, -1, *moving.shape[2:])


        def build(dimension, **options):
            return DisplacementField(Translation(dimension, **options))
        ''',
}

OVERRIDE = """
presets:
  smoke:
    retina:
      methods: [carl, gradicon, voxelmorph, classical, tiny_translation]
    training:
      tiny_translation:
        options: {channels: 4}
        stages: [{loss: diffusion, steps: 3, lr: 1.0e-3, lmbda: 1.0}]
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The plugin installed by pip into a folder of its own (the test environment stays as it is)."""
    root = tmp_path_factory.mktemp("plugin")
    source, site = root / "source", root / "site"
    source.mkdir()
    for name, text in PLUGIN.items():
        (source / name).write_text(textwrap.dedent(text))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return site


def _environment(site):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_registry_and_cli_see_the_plugin(plugin_site):
    code = "from equireg import methods; r = methods.registry(); print(r['tiny_translation'], 'tiny_translation' in methods.trained())"
    shown = subprocess.run([sys.executable, "-c", code], env=_environment(plugin_site), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "Method(builder='tiny_translation:build', trains=True) True" in shown.stdout
    helped = subprocess.run([sys.executable, "-m", "equireg", "register", "--help"], env=_environment(plugin_site),
                            capture_output=True, text=True)
    assert "tiny_translation" in helped.stdout


@pytest.mark.slow
def test_plugin_method_trains_and_is_evaluated_by_the_smoke_preset(plugin_site, tmp_path):
    directory = copy_workflow(tmp_path / "run")
    (directory / "override.yaml").write_text(OVERRIDE)
    target = "results/smoke/retina/tiny_translation/none/seed0.csv"
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/config.yaml",
                          "override.yaml", "--config", "preset=smoke", "--", target],
                         cwd=directory, env=_environment(plugin_site), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(directory / target)
    assert set(table.method) == {"tiny_translation"} and table.dice.notna().all()
    curve = pd.read_csv(directory / "results/smoke/curves/retina/tiny_translation/none/seed0.csv")
    assert list(curve.step) == [1, 2, 3] and curve.val_dice.notna().all()
    # without the plugin the same configuration is refused before any job, naming the method
    refused = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                              "config/config.yaml", "override.yaml", "--config", "preset=smoke"], cwd=directory,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "'tiny_translation' is not a registered method" in refused.stdout + refused.stderr
