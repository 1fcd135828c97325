"""A third-party transform plugin: its augmentation runs in training, in the configured order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TALLY_PLUGIN = """
import segcli

CALLS = []


@segcli.hookimpl
def register_transforms(register):
    register("tally", "tally_transform_plugin:build_tally", "Counts the samples it augments")


def build_tally(*, tag: str = ""):
    def tally(image, mask):
        CALLS.append((tag, tuple(image.shape), int(image[0].flatten().argmax())))
        return image, mask

    return tally
"""


@pytest.fixture
def tally_plugin(tmp_path, monkeypatch):
    """The plugin installed as a throwaway distribution and loaded in this process."""
    from fake_distributions import make_distribution

    import segcli.plugins

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-tally", "tally_transform_plugin", TALLY_PLUGIN, "tally")
    monkeypatch.syspath_prepend(str(site))
    plugins = segcli.plugins.load_plugins()
    monkeypatch.setattr(segcli.plugins, "_loaded", plugins)
    assert plugins.transforms.entry("tally").origin.distribution == "segcli-tally"
    import tally_transform_plugin

    tally_transform_plugin.CALLS.clear()
    yield tally_transform_plugin.CALLS
    sys.modules.pop("tally_transform_plugin")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("datasets") / "shapes"
    build_dataset(prepare(None, train=4, val=2, test=0, size=32), out, workers=1)
    return out


def test_a_run_uses_a_plugins_transform_on_each_training_sample(
    tally_plugin, small_dataset, tmp_path
):
    from segcli.config import build_config
    from segcli.training.fit import fit

    config = build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion"]},
        overrides=[
            f'dataset.path="{small_dataset}"',
            f'runs_dir="{tmp_path / "runs"}"',
            "model.base_width=4",
            "model.depth=2",
            "input.size=[32,32]",
            "train.batch_size=2",
            "train.workers=0",
            "train.epochs=1",
            'augment.tally.tag="run"',
        ],
    )
    fit(config)
    # the 4 training images, each once; validation is never augmented
    assert [call[:2] for call in tally_plugin] == [("run", (3, 32, 32))] * 4


def test_transforms_apply_in_the_configured_order(tally_plugin):
    from torchvision import tv_tensors

    from segcli.config import build_config
    from segcli.data.dataset import build_transforms

    config = build_config(overrides=["augment=none", "input.size=[]"])
    image = torch.zeros(3, 5, 7, dtype=torch.uint8)
    image[0, 0, 0] = 255  # the brightest pixel, at flat position 0 until a flip moves it
    pipeline = {"tally": {"tag": "first"}, "vflip": {"p": 1.0}}
    pipeline_then = {"vflip": {"p": 1.0}, "tally": {"tag": "after vflip"}}
    for augment in (pipeline, pipeline_then):
        transform = build_transforms(config.input, augment, 3)
        transform(tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(5, 7, dtype=torch.uint8)))
    assert tally_plugin == [("first", (3, 5, 7), 0), ("after vflip", (3, 5, 7), 4 * 7)]
