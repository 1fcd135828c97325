"""The `crop` transform: one window for image and mask, padding counted as ignore."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from segcli.data.format import IGNORE_INDEX
from segcli.plugins import get_plugins


def _crop(**options):
    return get_plugins().transforms.get("crop")(**options)


def test_crop_cuts_the_same_window_from_image_and_mask():
    torch.manual_seed(0)
    values = torch.arange(20 * 30, dtype=torch.uint8).reshape(20, 30)
    image = tv_tensors.Image(values[None].clone())
    mask = tv_tensors.Mask(values.clone())
    out_image, out_mask = _crop(size=[8, 12])(image, mask)
    assert out_image.shape == (1, 8, 12) and out_mask.shape == (8, 12)
    assert torch.equal(out_image[0], out_mask)


def test_crop_pads_a_small_image_and_ignores_the_padding():
    image = tv_tensors.Image(torch.full((3, 4, 5), 7, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(4, 5, dtype=torch.uint8))
    out_image, out_mask = _crop(size=[6, 9])(image, mask)
    assert out_mask.shape == (6, 9)
    assert int((out_mask == 1).sum()) == 4 * 5
    assert int((out_mask == IGNORE_INDEX).sum()) == 6 * 9 - 4 * 5
    assert int((out_image[0] == 0).sum()) == 6 * 9 - 4 * 5


@pytest.mark.parametrize("size", [[0, 4], [4], "big", [2.5, 3]])
def test_crop_refuses_a_size_that_is_not_two_positive_ints(size):
    with pytest.raises(ValueError, match="size must be"):
        _crop(size=size)
