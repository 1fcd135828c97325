"""The six recipes: valid configurations that train two steps and predict on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segcli.config import build_config
from segcli.data.format import ClassInfo
from segcli.data.plan import DatasetPlan, Sample
from segcli.data.prepare import build_dataset
from segcli.plugins import get_plugins

PLUGINS = get_plugins()
RECIPES = [
    "shapes-unet",
    "labpics-deeplabv3",
    "isbi-unet",
    "idd-lite-erfnet",
    "tgs-unet",
    "nyuv2-fcn8s",
]

# per recipe: classes, image channels, side of the generated images, overrides that shrink it
TINY = {
    "shapes-unet": (4, 3, 32, ["model.base_width=4"]),
    "labpics-deeplabv3": (3, 3, 32, []),
    "isbi-unet": (2, 1, 32, ["model.base_width=4"]),
    "idd-lite-erfnet": (7, 3, 32, []),
    "tgs-unet": (2, 1, 48, ["model.base_width=4"]),  # unet-valid needs 44 pixels
    "nyuv2-fcn8s": (41, 3, 32, ["model.head_width=16"]),
}


def _read_image(sample: Sample) -> np.ndarray:
    rng = np.random.default_rng(sample.meta["seed"])
    side, channels = sample.meta["side"], sample.meta["channels"]
    shape = (side, side) if channels == 1 else (side, side, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _read_mask(sample: Sample) -> np.ndarray:
    rng = np.random.default_rng(sample.meta["seed"] + 1000)
    side, classes = sample.meta["side"], sample.meta["classes"]
    mask = rng.integers(0, classes, (side, side)).astype(np.uint8)
    mask[:2] = 255  # a void border, as IDD-Lite has
    return mask


def _tiny_dataset(root: Path, name: str, classes: int, channels: int, side: int) -> Path:
    samples = [
        Sample(
            split,
            f"{split}{i}",
            None,
            "generated",
            {
                "seed": i + (100 if split == "val" else 0),
                "side": side,
                "channels": channels,
                "classes": classes,
            },
        )
        for split, count in (("train", 4), ("val", 2))
        for i in range(count)
    ]
    plan = DatasetPlan(
        name=name,
        classes=[
            ClassInfo(i, f"class{i}", (i * 5 % 256, i * 50 % 256, i * 90 % 256))
            for i in range(classes)
        ],
        samples=samples,
        read_mask=_read_mask,
        read_image=_read_image,
        image_channels=channels,
    )
    out = root / name
    build_dataset(plan, out, workers=1)
    return out


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_is_a_valid_configuration(name):
    config = build_config(PLUGINS.recipes.get(name))
    assert config.dataset.name in PLUGINS.datasets
    assert config.model.name in PLUGINS.models
    assert all(part.split(":")[0] in PLUGINS.losses for part in config.loss.name.split("+"))
    assert all(metric in PLUGINS.metrics for metric in config.metrics)
    assert config.train.monitor.split("/")[0] in config.metrics


# the three with big backbones are slow on two CPU cores; CI runs them all
SLOW_RECIPES = {"labpics-deeplabv3", "idd-lite-erfnet", "nyuv2-fcn8s"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_RECIPES else n for n in RECIPES]
)
def test_recipe_trains_two_steps_and_predicts(name, tmp_path):
    from segcli.inference.predict_files import predict_paths
    from segcli.training.fit import fit

    classes, channels, side, shrink = TINY[name]
    recipe = PLUGINS.recipes.get(name)
    root = _tiny_dataset(tmp_path / "data", recipe["dataset"]["name"], classes, channels, side)
    config = build_config(
        recipe,
        overrides=[
            f"dataset.path={str(root)!r}",
            f"runs_dir={str(tmp_path / 'runs')!r}",
            f"input.size=[{side}, {side}]",
            "train.batch_size=2",
            "train.epochs=1",
            "train.workers=0",
            "train.device='cpu'",
            *shrink,
        ],
    )
    run_dir = fit(config, max_steps=2)
    checkpoint = run_dir / "best.safetensors"
    if not checkpoint.exists():
        checkpoint = run_dir / "last.safetensors"
    assert checkpoint.is_file()
    images = sorted((root / "val" / "images").iterdir())
    report = predict_paths(checkpoint, images, tmp_path / "predictions", workers=0, device="cpu")
    assert not report.failed and len(report.written) >= len(images)
