"""The built-in joint image + mask augmentations, on torchvision's transforms v2 and OpenCV.

Each factory takes its options as keyword arguments and returns a callable
``(image: tv_tensors.Image, mask: tv_tensors.Mask) -> (image, mask)``. Both get the same
random draw; masks are resampled nearest-neighbour, and what a geometric transform uncovers
is filled with 0 in the image and the ignore index in the mask, so the loss and the metrics
skip those pixels. All randomness comes from torch's global generator, which segcli seeds
per sample.

Zoom, rotation and elastic deformation warp the uint8 pixels with OpenCV rather than
torchvision's tensor affine and elastic transforms, which resample through a float grid: 1.5 ms
against 0.04 ms a sample at 216 px on one core, and on a 2-core machine the loader's time is
taken from the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
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


def scale(range: Sequence[float] = (0.75, 1.25)) -> RandomWarp:
    """Zoom about the centre by a factor drawn uniformly from `range` [min, max]."""
    return RandomWarp(degrees=0.0, zoom=_interval(range))


def rotate(degrees: float = 15.0) -> RandomWarp:
    """Rotate about the centre by an angle drawn uniformly from [-degrees, degrees]."""
    if not 0 <= degrees <= 180:
        raise ValueError(f"degrees must be in [0, 180], got {degrees}")
    return RandomWarp(degrees=float(degrees), zoom=(1.0, 1.0))


class RandomWarp:
    """A rotation and zoom about the image centre, the same for image and mask (the draws
    in torchvision's RandomAffine order: angle, then zoom)."""

    def __init__(self, degrees: float, zoom: tuple[float, float]) -> None:
        self.degrees = degrees
        self.zoom = zoom

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        angle = torch.empty(1).uniform_(-self.degrees, self.degrees).item()
        zoom = torch.empty(1).uniform_(*self.zoom).item()
        height, width = image.shape[-2:]
        # OpenCV turns a positive angle the other way round from torchvision's affine
        centre = ((width - 1) / 2, (height - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, -angle, zoom)
        warped_image = _warp(image, matrix, cv2.INTER_LINEAR, _FILL[tv_tensors.Image])
        warped_mask = _warp(mask, matrix, cv2.INTER_NEAREST, _FILL[tv_tensors.Mask])
        return tv_tensors.wrap(warped_image, like=image), tv_tensors.wrap(warped_mask, like=mask)


def _warp(pixels: torch.Tensor, matrix: np.ndarray, interpolation: int, fill: int) -> torch.Tensor:
    """`pixels` ((C,) H, W) warped by the 2x3 `matrix` to the same size."""
    height, width = pixels.shape[-2:]
    warped = cv2.warpAffine(
        _planes(pixels),
        matrix,
        (width, height),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(fill,) * 4,
    )
    return _from_planes(warped, pixels)


def elastic(displacement: float = 10.0, grid: int = 3) -> ElasticWarp:
    """Smooth random deformation: displacements drawn with std `displacement` pixels on a
    `grid` x `grid` lattice over the image, interpolated bicubically to every pixel."""
    if displacement < 0:
        raise ValueError(f"displacement must be at least 0, got {displacement}")
    if not isinstance(grid, int) or isinstance(grid, bool) or grid < 2:
        raise ValueError(f"grid must be an int >= 2, got {grid!r}")
    return ElasticWarp(float(displacement), grid)


class ElasticWarp:
    """The U-Net paper's augmentation for microscopy (Ronneberger et al., 2015): a coarse
    lattice of Gaussian displacements, bicubic in between, the same for image and mask."""

    def __init__(self, displacement: float, grid: int) -> None:
        self.displacement = displacement
        self.grid = grid

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        lattice = torch.randn(2, self.grid, self.grid) * self.displacement
        shift_x, shift_y = (
            cv2.resize(plane.numpy(), (width, height), interpolation=cv2.INTER_CUBIC)
            for plane in lattice
        )
        rows, columns = np.indices((height, width), dtype=np.float32)
        source_x, source_y = columns + shift_x, rows + shift_y

        def remap(pixels: torch.Tensor, interpolation: int, fill: int) -> torch.Tensor:
            moved = cv2.remap(
                _planes(pixels),
                source_x,
                source_y,
                interpolation,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(fill,) * 4,
            )
            return _from_planes(moved, pixels)

        moved_image = remap(image, cv2.INTER_LINEAR, _FILL[tv_tensors.Image])
        moved_mask = remap(mask, cv2.INTER_NEAREST, _FILL[tv_tensors.Mask])
        return tv_tensors.wrap(moved_image, like=image), tv_tensors.wrap(moved_mask, like=mask)


def _planes(pixels: torch.Tensor) -> np.ndarray:
    """OpenCV's layout of `pixels` ((C,) H, W): (H, W) or (H, W, C)."""
    return pixels.numpy() if pixels.ndim == 2 else pixels.permute(1, 2, 0).numpy()


def _from_planes(planes: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Back to `like`'s layout; OpenCV drops the channel axis of one-channel images."""
    if like.ndim == 2:
        return torch.from_numpy(planes)
    height, width = like.shape[-2:]
    return torch.from_numpy(planes.reshape(height, width, -1)).permute(2, 0, 1)


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
