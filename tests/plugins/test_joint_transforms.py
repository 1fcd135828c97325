"""The built-in zoom, rotation and elastic deformation: the geometry of torchvision's affine
on uint8 pixels, and one deformation shared by image and mask."""

from __future__ import annotations

import pytest
import torch
from segcli_transforms.joint import RandomWarp, elastic, rotate, scale
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from segcli import IGNORE_INDEX


def _pair(channels: int = 3, height: int = 48, width: int = 64):
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    columns = torch.arange(width).view(1, -1).expand(height, width)
    smooth = torch.stack([(rows * 5 + columns * (c + 1)) % 256 for c in range(channels)])
    blocks = (rows // 8 + columns // 8) % 4  # class ids in 8 px squares
    return tv_tensors.Image(smooth.to(torch.uint8)), tv_tensors.Mask(blocks.to(torch.uint8))


def _torchvision(image, mask, angle: float, zoom: float):
    def affine(pixels, interpolation, fill):
        return F.affine(pixels, angle, [0, 0], zoom, [0.0, 0.0], interpolation, fill)

    return (
        affine(image, InterpolationMode.BILINEAR, 0),
        affine(mask, InterpolationMode.NEAREST, IGNORE_INDEX),
    )


@pytest.mark.parametrize(("degrees", "zoom"), [(0.0, 1.2), (0.0, 0.8), (30.0, 1.0), (40.0, 1.1)])
def test_warp_matches_torchvision_affine(degrees, zoom):
    image, mask = _pair()
    torch.manual_seed(3)  # its first draw is -0.99 of the range: a clear rotation
    angle = torch.empty(1).uniform_(-degrees, degrees).item()  # the transform's first draw
    torch.manual_seed(3)
    ours_image, ours_mask = RandomWarp(degrees=degrees, zoom=(zoom, zoom))(image, mask)
    theirs_image, theirs_mask = _torchvision(image, mask, angle, zoom)
    assert ours_image.dtype == torch.uint8 and ours_image.shape == image.shape
    assert isinstance(ours_image, tv_tensors.Image) and isinstance(ours_mask, tv_tensors.Mask)
    inside = theirs_mask != IGNORE_INDEX
    difference = (ours_image.float() - theirs_image.float()).abs()[:, inside]
    assert difference.median() <= 2
    assert (ours_mask == theirs_mask).float().mean() >= 0.97


def test_what_a_zoom_out_uncovers_is_black_and_ignored():
    image, mask = _pair(channels=1)
    warped_image, warped_mask = scale(range=(0.5, 0.5))(image, mask)
    assert warped_image.shape == (1, 48, 64) and warped_mask.shape == (48, 64)
    assert warped_image[0, 0, 0] == 0 and warped_mask[0, 0] == IGNORE_INDEX
    assert (warped_mask[20:28, 24:40] != IGNORE_INDEX).all()  # the centre stays labelled


@pytest.mark.parametrize(
    "augment", [rotate(degrees=30), elastic(displacement=3.0)], ids=["rotate", "elastic"]
)
def test_draws_come_from_the_seeded_generator(augment):
    image, mask = _pair()
    torch.manual_seed(3)
    first = augment(image, mask)
    torch.manual_seed(3)
    again = augment(image, mask)
    torch.manual_seed(4)
    other = augment(image, mask)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_elastic_without_displacement_changes_nothing():
    image, mask = _pair()
    moved_image, moved_mask = elastic(displacement=0.0)(image, mask)
    assert torch.equal(moved_image, image) and torch.equal(moved_mask, mask)
    assert isinstance(moved_image, tv_tensors.Image) and isinstance(moved_mask, tv_tensors.Mask)


def test_elastic_moves_image_and_mask_together():
    rows = torch.arange(96).view(-1, 1).expand(96, 96)
    mask = tv_tensors.Mask(((rows // 24 + rows.T // 24) % 2).to(torch.uint8))  # 24 px squares
    image = tv_tensors.Image((mask * 200).unsqueeze(0))  # the class, written into the pixels
    torch.manual_seed(0)
    moved_image, moved_mask = elastic(displacement=4.0, grid=3)(image, mask)
    labelled = moved_mask != IGNORE_INDEX
    assert (moved_mask[labelled] != mask[labelled]).float().mean() > 0.05  # it did deform
    # the same field: the bilinear image sits nearest the mask's class (edges blur, no more)
    distance = (moved_image[0][labelled].float() - moved_mask[labelled].float() * 200).abs()
    assert (distance <= 100).float().mean() > 0.99


@pytest.mark.parametrize("options", [{"displacement": -1.0}, {"grid": 1}, {"grid": 2.5}])
def test_elastic_rejects_bad_options(options):
    with pytest.raises(ValueError, match="displacement|grid"):
        elastic(**options)
