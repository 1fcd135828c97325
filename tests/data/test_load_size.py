"""input.load_scale: images resized once, when read, so augmentations work on small arrays."""

from __future__ import annotations

import pytest
import torch

from segcli.config import build_config
from segcli.data.dataset import SampleKey, SegmentationDataset, build_transforms, cache_decoded
from segcli.data.format import read_dataset_info
from segcli.errors import ConfigError


def _dataset(root, *overrides, augmented=False):
    config = build_config(None, overrides=["input.size=[24,20]", *overrides])
    info = read_dataset_info(root)
    augment = config.augment if augmented else None
    transform = build_transforms(config.input, augment, info.image_channels)
    load_size = config.input.load_size(augmented=augmented)
    return SegmentationDataset(root, "train", transform, seed=3, info=info, load_size=load_size)


def test_validation_samples_read_at_the_input_size_equal_the_resized_originals(shapes_dataset):
    plain, loaded = _dataset(shapes_dataset), _dataset(shapes_dataset, "input.load_scale=1.5")
    assert loaded.load_size == (24, 20)  # validation: exactly the input size
    for index in (0, 7, 30):
        image, mask = plain[SampleKey(0, index)]
        loaded_image, loaded_mask = loaded[SampleKey(0, index)]
        # the same resize policy; only the rounding to 8 bits in between differs
        assert (image - loaded_image).abs().max() < 0.6 / 255 / min(build_config(None).input.std)
        assert torch.equal(mask, loaded_mask)


def test_training_images_are_kept_at_the_load_size_and_counted_so(shapes_dataset):
    loaded = _dataset(
        shapes_dataset, "input.load_scale=1.5", "augment.scale.range=[0.8,1.2]", augmented=True
    )
    assert loaded.load_size == (36, 30)
    assert loaded.decoded_bytes() == len(loaded) * 36 * 30 * (3 + 1)
    assert cache_decoded([loaded], "memory")
    assert {(image.shape, mask.shape) for image, mask in loaded.decoded} == {
        ((36, 30, 3), (36, 30))
    }
    image, mask = loaded[SampleKey(2, 5)]
    assert image.shape[-2:] == mask.shape == (24, 20)
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_images_no_larger_than_the_load_size_are_kept_as_they_are(shapes_dataset):
    loaded = _dataset(shapes_dataset, "input.size=[64,64]", "input.load_scale=1.5")
    cache_decoded([loaded], "memory")
    assert loaded.decoded[0][0].shape == (64, 64, 3)


def test_load_scale_is_off_by_default_and_at_least_one():
    config = build_config(None)
    assert config.input.load_scale == 0 and config.input.load_size(augmented=True) is None
    native = build_config(None, overrides=["input.size=[]", "input.load_scale=2"])
    assert native.input.load_size(augmented=True) is None  # native size: nothing to scale
    with pytest.raises(ConfigError, match="load_scale"):
        build_config(None, overrides=["input.load_scale=0.5"])
