"""Augmentation randomness is a pure function of (seed, epoch, sample index): any number of
loader workers, and a resumed run, see exactly the samples an uninterrupted run sees."""

from __future__ import annotations

import torch

from segcli.config import build_config
from segcli.data.dataset import SampleKey, SegmentationDataset, build_transforms
from segcli.data.format import read_dataset_info


def _augmented(root, seed=3):
    config = build_config(
        None,
        overrides=[
            "input.size=[40,40]",
            "augment.scale.range=[0.6,1.4]",
            "augment.rotate.degrees=30",
            "augment.hflip.p=0.5",
        ],
    )
    info = read_dataset_info(root)
    transform = build_transforms(config.input, config.augment, info.image_channels)
    return SegmentationDataset(root, "train", transform, seed=seed, info=info)


def test_a_sample_depends_on_seed_epoch_and_index_only(shapes_dataset):
    dataset = _augmented(shapes_dataset)
    first = dataset[SampleKey(2, 5)]
    torch.manual_seed(12345)  # whatever the process drew before
    for index in range(8):
        dataset[SampleKey(1, index)]
    again = _augmented(shapes_dataset)[SampleKey(2, 5)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other_epochs = [dataset[SampleKey(epoch, 5)][0] for epoch in (3, 4, 5)]
    assert any(not torch.equal(first[0], image) for image in other_epochs)
    other_seed = _augmented(shapes_dataset, seed=4)[SampleKey(2, 5)][0]
    assert not torch.equal(first[0], other_seed)


def test_drawing_a_sample_leaves_the_process_random_state_alone(shapes_dataset):
    dataset = _augmented(shapes_dataset)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    dataset[SampleKey(0, 1)]
    assert torch.equal(torch.rand(3), expected)
