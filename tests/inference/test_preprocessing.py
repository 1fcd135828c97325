"""The one preprocessing: training and prediction feed a model the same tensor, outputs come
back by the same resize, a fixed model predicts a fixed mask, tiles change nothing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from segcli.building import build_model, model_record
from segcli.config import build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.inference.predictor import Predictor
from segcli.inference.preprocessing import preprocessing_record, resize, resize_in_strips
from segcli.runs.checkpoint_file import save_checkpoint

CLASSES = [ClassInfo(i, f"class{i}", (60 * i, 255 - 60 * i, 30 * i)) for i in range(4)]


def golden_checkpoint(path, *, size=(24, 24), seed=0):
    """A 4-class U-Net (width 4, depth 2) with the weights torch.manual_seed(seed) gives,
    its head sharpened."""
    config = build_config(
        {
            "model": {"name": "unet", "base_width": 4, "depth": 2},
            "input": {"size": list(size)},
        }
    )
    info = DatasetInfo(name="golden", classes=CLASSES, splits={}, image_channels=3)
    torch.manual_seed(seed)
    model = build_model(config, info).eval()
    with torch.no_grad():  # so the classes compete on the image, not on the head's biases
        model.head.bias.zero_()
        model.head.weight.mul_(10)
    meta = {
        "config": config.to_dict(),
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES],
        "image_channels": 3,
        "dataset": "golden",
        "model": model_record(config, info),
        "preprocessing": preprocessing_record(config, 3, model),
    }
    save_checkpoint(path, model.state_dict(), meta)
    return path


def golden_image(height=37, width=45):
    """Diagonal colour ramps with a bright square: every channel and region differs."""
    rows, columns = np.mgrid[0:height, 0:width]
    image = np.stack(
        [
            (rows * 255 // (height - 1)),
            (columns * 255 // (width - 1)),
            ((rows + columns) * 7) % 256,
        ],
        -1,
    ).astype(np.uint8)
    image[8:20, 10:26] = (250, 240, 10)
    return image


# the (37, 45) uint8 mask golden_checkpoint(seed=1) predicts for golden_image(): its sha256,
# and its class counts to show what changed when it fails
GOLDEN_MASK_SHA256 = "a6400f777aa97611e1acb43d1f1022ea4bd4a0e6d2cf0cf0b7c2ee0d0377cec8"
GOLDEN_COUNTS = [671, 71, 15, 908]


def test_a_fixed_model_and_image_give_the_recorded_mask(tmp_path):
    """Any change to preprocessing (resize, normalisation, scale) or to the resize back
    changes this mask; if the change is intended, record the new mask here."""
    predictor = Predictor(golden_checkpoint(tmp_path / "golden.safetensors", seed=1), "cpu")
    mask = predictor.predict_mask(golden_image())
    counts = np.bincount(mask.ravel(), minlength=4).tolist()
    digest = hashlib.sha256(mask.tobytes()).hexdigest()
    assert (digest, counts) == (GOLDEN_MASK_SHA256, GOLDEN_COUNTS)


def test_training_and_prediction_feed_the_model_the_same_tensor(trained_run, shapes_dataset):
    """Validation (no augmentation) and `segcli predict` preprocess an image identically."""
    from segcli.data.dataset import SegmentationDataset, build_transforms
    from segcli.data.images import read_image

    predictor = Predictor(trained_run / "best.safetensors", "cpu")
    assert predictor.size == (32, 32)  # the 64x64 images are resized
    transform = build_transforms(predictor.config.input, None, predictor.channels)
    dataset = SegmentationDataset(shapes_dataset, "val", transform)
    for index in range(3):
        seen_in_training, mask = dataset[index]
        image = read_image(dataset.pairs[index][0], predictor.channels)
        seen_in_prediction = predictor.preprocess(image)
        assert seen_in_training.dtype == seen_in_prediction.dtype == torch.float32
        assert torch.equal(seen_in_training, seen_in_prediction)
        assert mask.shape == (32, 32)


@pytest.mark.parametrize(
    "source, target", [((24, 24), (37, 45)), ((32, 40), (20, 30)), ((16, 48), (50, 21))]
)
def test_outputs_resized_back_in_strips_equal_the_policy_resize(source, target):
    """The memory-bounded strip resize is the policy's resize, up or down, strip by strip."""
    probabilities = torch.rand(3, *source, generator=torch.Generator().manual_seed(0))
    strips = list(resize_in_strips(probabilities, *target, rows=7))
    assert [top for top, _ in strips] == list(range(0, target[0], 7))
    whole = torch.cat([strip for _, strip in strips], 1)
    torch.testing.assert_close(whole, resize(probabilities, target), atol=1e-6, rtol=0)


class Pointwise(nn.Module):
    """Sees one pixel at a time, so where tiles and padding fall cannot matter."""

    size_divisor = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images) * 4


def test_tiled_prediction_equals_untiled_prediction_exactly(native_checkpoint):
    predictor = Predictor(native_checkpoint, "cpu")
    predictor.model = Pointwise().eval()
    image = golden_image(110, 150)

    def probabilities(**tiling):
        strips = []
        predictor.predict_image(image, lambda top, p: strips.append(p.clone()), **tiling)
        return torch.cat(strips, 1)

    whole = probabilities()
    tiled = probabilities(tile=48, overlap=0.5, batch_size=3)
    assert whole.shape == tiled.shape == (4, 110, 150)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    whole_mask = predictor.predict_mask(image)
    assert len(np.unique(whole_mask)) > 1
    assert np.array_equal(predictor.predict_mask(image, tile=48, overlap=0.5), whole_mask)
