"""`check_transform`: the contract of an augmentation plugin (image and mask stay aligned,
mask values kept, shapes and dtypes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from segcli.testing.contract import (
    IGNORE_INDEX,
    build_component,
    component_name,
    describe,
    fail,
    options_for,
)

_MASK_VALUES = (3, 7, 9)


def check_transform(
    factory: Callable[..., Callable],
    *,
    options: Mapping[str, Any] | None = None,
    channels: Sequence[int] = (1, 3),
    seeds: int = 8,
    name: str | None = None,
) -> None:
    """Check a transform factory ``(**options) -> transform``, the transform mapping
    ``(image: tv_tensors.Image uint8 (C, H, W), mask: tv_tensors.Mask uint8 (H, W))`` to
    ``(image, mask)``. `options` default to ``factory.test_options``.

    Properties, for images of each channel count in `channels` and `seeds` random draws:
    *types and shapes* (an Image and a Mask back, dtypes and channels kept, image and mask
    the same height and width); *mask values preserved* (every output mask value is an
    input value or the ignore index 255: masks resample nearest-neighbour and fill with
    255); *image and mask move together* (a geometric change moves both alike); *seeded
    determinism* (the same torch seed gives the same output whatever Python's and NumPy's
    random states: torch's generator is the only source of randomness).
    """
    import random

    import numpy as np
    from torchvision import tv_tensors

    name = component_name(factory, name)
    transform = build_component("transform", name, factory, **options_for(factory, options))
    if not callable(transform):
        fail("transform", name, "factory result", f"returned {describe(transform)}")
    for count in channels:
        image, mask = _transform_sample(count)
        for seed in range(seeds):
            outputs = []
            for other_seed in (seed + 1, seed + 2):
                random.seed(other_seed)
                np.random.seed(other_seed)
                torch.manual_seed(seed)
                outputs.append(transform(tv_tensors.Image(image), tv_tensors.Mask(mask)))
            _check_transform_output(name, outputs[0], count)
            (image_out, mask_out), (again_image, again_mask) = outputs
            if not (torch.equal(image_out, again_image) and torch.equal(mask_out, again_mask)):
                fail(
                    "transform",
                    name,
                    "seeded determinism",
                    f"torch seed {seed} gives two different results: draw random numbers from "
                    "torch only (not Python's random or NumPy)",
                )
            _check_mask_values(name, mask_out)
            _check_alignment(name, image_out, mask_out, seed)


def _transform_sample(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An odd-sized sample whose image brightness encodes its mask class, with regions off
    the centre so that any flip, rotation or zoom visibly moves them."""
    mask = torch.full((61, 83), _MASK_VALUES[0], dtype=torch.uint8)
    mask[5:35, 4:44] = _MASK_VALUES[1]
    mask[38:58, 52:77] = _MASK_VALUES[2]
    brightness = torch.zeros(256, dtype=torch.uint8)
    # dim enough that brightening by 90 % still tells the classes apart below 255
    brightness[list(_MASK_VALUES)] = torch.tensor([40, 80, 120], dtype=torch.uint8)
    image = brightness[mask.long()].expand(channels, -1, -1).clone()
    return image, mask


def _check_transform_output(name: str, output: Any, channels: int) -> None:
    from torchvision import tv_tensors

    prop = "types and shapes"
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        fail("transform", name, prop, f"returned {describe(output)}, not (image, mask)")
    image, mask = output
    if not isinstance(image, tv_tensors.Image) or not isinstance(mask, tv_tensors.Mask):
        fail(
            "transform",
            name,
            prop,
            f"returned ({type(image).__name__}, {type(mask).__name__}), not (Image, Mask): "
            "later steps tell the mask from the image by these types",
        )
    if image.dtype != torch.uint8 or mask.dtype != torch.uint8:
        fail("transform", name, prop, f"dtypes became {image.dtype} and {mask.dtype}, not uint8")
    if image.dim() != 3 or image.shape[0] != channels or mask.shape != image.shape[1:]:
        fail(
            "transform",
            name,
            prop,
            f"a {channels}-channel image came back {tuple(image.shape)} with a mask of "
            f"{tuple(mask.shape)}",
        )


def _check_mask_values(name: str, mask: torch.Tensor) -> None:
    new = sorted(set(torch.unique(mask).tolist()) - {*_MASK_VALUES, IGNORE_INDEX})
    if new:
        fail(
            "transform",
            name,
            "mask values preserved",
            f"the mask gained values {new} (input {list(_MASK_VALUES)}): resample masks "
            f"nearest-neighbour and fill uncovered pixels with the ignore index {IGNORE_INDEX}",
        )


def _check_alignment(name: str, image: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
    """Each class's pixels keep their own brightness: told apart by the nearest class median,
    at least 3 in 4 of every class's pixels (the rest: edges the image blends) land in their
    own class. A mask left in place, or moved differently, mixes the classes and breaks it."""
    brightness = image.float().mean(0)
    present = [value for value in _MASK_VALUES if (mask == value).any()]
    medians = torch.stack([brightness[mask == value].median() for value in present])
    separated = bool((medians[1:] > medians[:-1]).all())
    for value in present:
        pixels = brightness[mask == value]
        nearest = (pixels[:, None] - medians[None, :]).abs().argmin(1)
        recall = float((nearest == present.index(value)).float().mean())
        if not separated or recall < 0.75:
            fail(
                "transform",
                name,
                "image and mask move together",
                f"with torch seed {seed} the image's regions no longer match the mask's "
                f"(class {value}: {recall:.0%} of its pixels look like it); apply the same "
                "geometric change, from the same random draw, to both",
            )
