"""The built-in joint image + mask augmentations, on torchvision's transforms v2.

Each factory takes its options as keyword arguments and returns a callable
``(image: tv_tensors.Image, mask: tv_tensors.Mask) -> (image, mask)``. torchvision's v2
transforms apply the same random draw to both, resample masks nearest-neighbour and fill
what a geometric transform uncovers with the value given for ``tv_tensors.Mask``: the
ignore index, so the loss and the metrics skip those pixels. All randomness comes from
torch's global generator, which segcli seeds per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from segcli import IGNORE_INDEX

_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


def hflip(p: float = 0.5) -> v2.Transform:
    return v2.RandomHorizontalFlip(_probability(p))


def vflip(p: float = 0.5) -> v2.Transform:
    return v2.RandomVerticalFlip(_probability(p))


def scale(range: Sequence[float] = (0.75, 1.25)) -> v2.Transform:
    low, high = _interval(range)
    return v2.RandomAffine(
        degrees=0.0,
        scale=(low, high),
        interpolation=v2.InterpolationMode.BILINEAR,
        fill=_FILL,
    )


def rotate(degrees: float = 15.0) -> v2.Transform:
    if not 0 <= degrees <= 180:
        raise ValueError(f"degrees must be in [0, 180], got {degrees}")
    return v2.RandomAffine(
        degrees=float(degrees), interpolation=v2.InterpolationMode.BILINEAR, fill=_FILL
    )


def crop(size: Sequence[int] = (256, 256)) -> v2.Transform:
    """A random window of `size` [height, width]; a smaller image is padded first, its mask
    with the ignore index so the padding counts for nothing."""
    height, width = _side_pair(size)
    return v2.RandomCrop((height, width), pad_if_needed=True, fill=_FILL)


def color_jitter(strength: float = 0.2) -> nn.Module:
    if strength < 0:
        raise ValueError(f"strength must be at least 0, got {strength}")
    return ColorJitter(strength)


class ColorJitter(nn.Module):
    """Brightness and contrast, plus saturation for colour images; the mask passes through.

    Grey images get no saturation draw at all: torchvision would draw a factor it then
    cannot apply, shifting every later random number of the sample."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.grey = v2.ColorJitter(brightness=strength, contrast=strength)
        self.colour = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        jitter = self.grey if image.shape[-3] == 1 else self.colour
        return jitter(image), mask


def _probability(p: float) -> float:
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    return float(p)


def _side_pair(size: Sequence[int]) -> tuple[int, int]:
    values = list(size) if isinstance(size, (list, tuple)) else [size, size]
    if len(values) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        raise ValueError(f"size must be [height, width], two ints >= 1, got {size!r}")
    return values[0], values[1]


def _interval(bounds: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(v) for v in bounds)
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise ValueError(f"range must be [min, max] with 0 < min <= max, got {list(bounds)}")
    return values
