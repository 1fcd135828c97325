"""The one resize and the one pad policy: how an image becomes the tensor a model sees.

Training and validation (`segcli.data.dataset`), evaluation, prediction (whole images and
tiles), export and `segcli.testing` all go through these functions, so the same image gives
the same model input everywhere:

- pixels are scaled to [0, 1] (uint8 / 255), resized when the model has a fixed input size,
  then normalised with the per-channel mean and std;
- resize (`RESIZE_POLICY`): bilinear, antialiased, `align_corners=False`, in float32. The
  model's outputs are resized back to the image's size with the same policy (in strips of
  rows, `resize_in_strips`, so a huge image never needs full-size float maps of all classes);
- pad (`PAD_POLICY`): bottom/right to a multiple of the model's `size_divisor`, by
  reflection (zeros where the image is smaller than the padding, which reflection cannot
  fill); the outputs are cropped back by the same amount.

A checkpoint records its model's preprocessing (`preprocessing_record`), so a prediction
uses what the model was trained with even when defaults change later.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from segcli.config import InputConfig, RunConfig
from segcli.errors import CheckpointError

RESIZE_POLICY = "bilinear-antialias"
PAD_POLICY = "reflect-bottom-right"
PIXEL_SCALE = 255.0  # images are read as uint8 (16-bit ones are scaled down on reading)
STRIP_ROWS = 256  # rows of full-resolution outputs held at once when resizing back


def resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(C, H, W) or (N, C, H, W) float resized to `size` (height, width) by the policy."""
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    batch = images if images.dim() == 4 else images[None]
    # torch's antialiased kernels are float32/float64 only (autocast outputs are half)
    resized = F.interpolate(
        batch.float(), size=size, mode="bilinear", align_corners=False, antialias=True
    ).to(images.dtype)
    return resized if images.dim() == 4 else resized[0]


def size_divisor(model: nn.Module) -> int:
    """What the model's input sides must be multiples of (its `size_divisor`, default 1)."""
    for candidate in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        if getattr(candidate, "size_divisor", None):  # itself, or inside DDP / torch.compile
            return int(candidate.size_divisor)
    return 1


def pad_to_multiple(images: torch.Tensor, divisor: int) -> tuple[torch.Tensor, int, int]:
    """(padded images, rows added, columns added): bottom/right, by the pad policy."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % divisor, -width % divisor
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "constant"
        images = F.pad(images, [0, pad_w, 0, pad_h], mode=mode)
    return images, pad_h, pad_w


def crop_padding(outputs: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Outputs of padded images cropped back to the images' own size."""
    if not (pad_h or pad_w):
        return outputs
    return outputs[..., : outputs.shape[-2] - pad_h or None, : outputs.shape[-1] - pad_w or None]


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input images; `size` None means each image's own size."""

    size: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_channels: int
    size_divisor: int = 1

    def record(self) -> dict[str, Any]:
        """The checkpoint's (and export sidecar's) description of this preprocessing."""
        return {
            "size": list(self.size) if self.size else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "image_channels": self.image_channels,
            "pixel_scale": PIXEL_SCALE,
            "resize": RESIZE_POLICY,
            "pad": PAD_POLICY,
            "size_divisor": self.size_divisor,
        }

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) -> normalised float (C, h, w), resized to `size` when it is set.
        Float pixels are taken as already scaled to [0, 1] (torchvision's convention)."""
        if pixels.is_floating_point():
            tensor = pixels.to(torch.float32, copy=True)
        else:
            tensor = pixels.float().div_(PIXEL_SCALE)
        if self.size:
            tensor = resize(tensor, self.size)
        return self.normalise(tensor)

    def normalise(self, tensor: torch.Tensor) -> torch.Tensor:
        """Float (C, H, W) pixels in [0, 1] -> normalised, in place."""
        mean, std = _channel_tensors(self.mean, self.std)
        return tensor.sub_(mean).div_(std)

    def image_input(self, image: np.ndarray, *, resized: bool = True) -> torch.Tensor:
        """uint8 (H, W, C) array -> the model's input; `resized=False` keeps its size (tiles)."""
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if resized:
            return self.model_input(pixels)
        return self.normalise(pixels.float().div_(PIXEL_SCALE))


class TrainingInput:
    """The last of training's and validation's joint transforms: the image becomes the
    model's input exactly as in prediction; the mask is resized to match, nearest-neighbour."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model_input = self.preprocessing.model_input(image.as_subclass(torch.Tensor))
        mask = mask.as_subclass(torch.Tensor)
        if tuple(mask.shape[-2:]) != tuple(model_input.shape[-2:]):
            size = tuple(model_input.shape[-2:])
            mask = F.interpolate(mask[None, None], size=size, mode="nearest")[0, 0]
        return model_input, mask


@lru_cache(maxsize=8)
def _channel_tensors(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)


def configured_preprocessing(
    input_config: InputConfig, image_channels: int, divisor: int = 1
) -> Preprocessing:
    """The preprocessing a configuration's `[input]` section trains with."""
    mean, std = input_config.normalisation(image_channels)
    size = tuple(input_config.size) if input_config.size else None
    return Preprocessing(size, tuple(mean), tuple(std), image_channels, divisor)


def preprocessing_record(
    config: RunConfig, image_channels: int, model: nn.Module | None = None
) -> dict[str, Any]:
    """The `preprocessing` entry of a checkpoint's metadata (see `recorded_preprocessing`)."""
    divisor = size_divisor(model) if model is not None else 1
    return configured_preprocessing(config.input, image_channels, divisor).record()


def recorded_preprocessing(meta: dict[str, Any], source: object) -> Preprocessing:
    """The preprocessing a checkpoint or export records."""
    record = meta.get("preprocessing")
    if not isinstance(record, dict):
        raise CheckpointError(
            f"{source} is damaged: its metadata has no preprocessing record",
            hint="use another checkpoint (the run's best or last) or export it again",
        )
    try:
        policies = (record["resize"], record["pad"])
        size = tuple(int(side) for side in record["size"]) if record["size"] else None
        recorded = Preprocessing(
            size,
            tuple(float(v) for v in record["mean"]),
            tuple(float(v) for v in record["std"]),
            int(record["image_channels"]),
            int(record["size_divisor"]),
        )
        scale = float(record["pixel_scale"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: its preprocessing record is damaged ({exc!r})") from None
    if policies != (RESIZE_POLICY, PAD_POLICY) or scale != PIXEL_SCALE:
        raise CheckpointError(
            f"{source} was made with preprocessing this segcli does not implement (resize "
            f"{policies[0]!r}, pad {policies[1]!r}, pixel scale {scale:g}; this one: "
            f"{RESIZE_POLICY!r}, {PAD_POLICY!r}, {PIXEL_SCALE:g})",
            hint="use the segcli version that wrote it",
        )
    if len(recorded.mean) != recorded.image_channels or len(recorded.std) != len(recorded.mean):
        raise CheckpointError(
            f"{source}: its preprocessing record has {len(recorded.mean)} mean and "
            f"{len(recorded.std)} std values for {recorded.image_channels} image channel(s)"
        )
    return recorded


@lru_cache(maxsize=16)
def _axis_weights(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source index, weight), each (size_out, taps), of the policy's 1-D resize: the rows
    of the resize matrix, taken from resizing the identity so they are torch's own weights."""
    matrix = resize(torch.eye(size_in)[None, None], (size_out, size_in))[0, 0]
    nonzero = matrix != 0
    first = nonzero.int().argmax(1)
    last = size_in - 1 - nonzero.flip(1).int().argmax(1)
    taps = int((last - first).max()) + 1
    index = first[:, None] + torch.arange(taps)
    inside = index <= last[:, None]
    index = index.clamp_(max=size_in - 1)
    return index, matrix.gather(1, index) * inside


def resize_in_strips(
    outputs: torch.Tensor, height: int, width: int, rows: int = STRIP_ROWS
) -> Iterator[tuple[int, torch.Tensor]]:
    """`(top, strip)`: (K, h, w) resized to (K, height, width) by the policy, `rows` rows at
    a time, so only one strip of the full-size result exists at once."""
    in_h, in_w = outputs.shape[-2:]
    if (in_h, in_w) == (height, width):
        for top in range(0, height, rows):
            yield top, outputs[:, top : top + rows]
        return
    row_index, row_weight = _axis_weights(in_h, height)
    column_index, column_weight = _axis_weights(in_w, width)
    for top in range(0, height, rows):
        index, weight = row_index[top : top + rows], row_weight[top : top + rows]
        vertical = _weighted_taps(outputs, 1, index, weight)
        yield top, _weighted_taps(vertical, 2, column_index, column_weight)


def _weighted_taps(
    values: torch.Tensor, dim: int, index: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Sum over taps t of `values` gathered along `dim` at index[:, t], times weight[:, t]:
    one tap at a time, so no (..., taps) intermediate of the full strip is ever made."""
    shape = (-1,) + (1,) * (values.dim() - 1 - dim)
    total = values.index_select(dim, index[:, 0]).mul_(weight[:, 0].view(shape))
    for tap in range(1, index.shape[1]):
        total.addcmul_(values.index_select(dim, index[:, tap]), weight[:, tap].view(shape))
    return total
