"""dataset.cache: images decoded once and kept in memory, the samples unchanged."""

from __future__ import annotations

import shutil

import pytest
import torch

from segcli.config import build_config
from segcli.data.dataset import SampleKey, SegmentationDataset, build_transforms, cache_decoded
from segcli.data.format import read_dataset_info
from segcli.errors import DataError


def _dataset(root):
    config = build_config(None, overrides=["augment.scale.range=[0.8,1.2]", "input.size=[48,40]"])
    info = read_dataset_info(root)
    transform = build_transforms(config.input, config.augment, info.image_channels)
    return SegmentationDataset(root, "train", transform, seed=3, info=info)


def test_cached_samples_equal_the_decoded_ones(shapes_dataset):
    plain, cached = _dataset(shapes_dataset), _dataset(shapes_dataset)
    assert cache_decoded([cached], "memory")
    for key in (SampleKey(0, 0), SampleKey(2, 5), SampleKey(1, 11)):
        image, mask = plain[key]
        cached_image, cached_mask = cached[key]
        assert torch.equal(image, cached_image) and torch.equal(mask, cached_mask)


def test_a_cached_dataset_reads_no_file_after_decoding(shapes_dataset, tmp_path):
    root = tmp_path / "shapes"
    shutil.copytree(shapes_dataset, root)
    dataset = _dataset(root)
    cache_decoded([dataset], "memory")
    shutil.rmtree(root / "train")
    image, mask = dataset[SampleKey(0, 1)]
    assert image.shape[-2:] == mask.shape == (48, 40)


def test_auto_caches_only_what_fits_in_a_quarter_of_the_memory(shapes_dataset):
    dataset = _dataset(shapes_dataset)
    needed = dataset.decoded_bytes()
    assert needed == len(dataset) * 64 * 64 * (3 + 1)
    assert not cache_decoded([dataset], "auto", memory_available=4 * needed - 1)
    assert dataset.decoded is None
    assert cache_decoded([dataset], "auto", memory_available=4 * needed)
    assert dataset.decoded is not None and len(dataset.decoded) == len(dataset)


def test_off_never_caches(shapes_dataset):
    dataset = _dataset(shapes_dataset)
    assert not cache_decoded([dataset], "off", memory_available=10**15)
    assert dataset.decoded is None


def test_a_corrupt_image_is_reported_when_the_cache_is_filled(shapes_dataset, tmp_path):
    root = tmp_path / "shapes"
    shutil.copytree(shapes_dataset, root)
    dataset = _dataset(root)
    broken = dataset.pairs[7][0]
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=str(broken.name)):
        cache_decoded([dataset], "memory")
