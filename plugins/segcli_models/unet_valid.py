"""U-Net with valid (unpadded) convolutions, as in Ronneberger et al. 2015 and the TGS tutorial.

Every 3x3 convolution trims one pixel per side, so the output is smaller than the input.
The skips are centre-cropped to the upsampled map. The engine resizes the logits to the
target's size (see docs/models.md), so training, evaluation and prediction agree.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segcli import UsageError

from .unet import conv_block


def _centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class ValidUNet(nn.Module):
    """Encoder of `depth + 1` valid conv blocks with `depth` poolings; transposed-conv decoder."""

    head_prefixes = ("head.",)
    shrinks_output = True

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 2,
        base_width: int = 16,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if base_width < 1:
            raise ValueError(f"base_width must be at least 1, got {base_width}")
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            conv_block(c_in, c_out, batch_norm, padding=0)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(depth))
        )
        self.decoder = nn.ModuleList(
            conv_block(2 * widths[i], widths[i], batch_norm, padding=0)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def min_input_size(self) -> int:
        """The smallest square input whose output is at least one pixel (segcli.testing
        checks the model at this size or larger)."""
        size = 1
        while self.output_size(size) < 1:
            size += 1
        return size

    def output_size(self, size: int) -> int:
        """Output side length for an input side length (one dimension)."""
        for _ in range(self.depth):
            size = (size - 4) // 2
        size -= 4
        for _ in range(self.depth):
            size = size * 2 - 4
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if min(self.output_size(height), self.output_size(width)) < 1:
            raise UsageError(
                f"unet-valid of depth {self.depth} needs inputs of at least "
                f"{self.min_input_size}x{self.min_input_size} pixels, got "
                f"{height}x{width}",
                hint="raise input.size or lower model.depth",
            )
        skips = []
        for index, block in enumerate(self.encoder):
            if index:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            x = up(x)
            skip = _centre_crop(skips.pop(), x.shape[-2], x.shape[-1])
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def build_unet_valid(
    num_classes: int,
    in_channels: int = 3,
    *,
    depth: int = 2,
    base_width: int = 16,
    batch_norm: bool = False,
) -> ValidUNet:
    """The TGS tutorial's U-Net: unpadded 3x3 convolutions, centre-cropped skips, 2x2
    transposed-convolution upsampling. The defaults (depth 2, widths 16-32-64, no
    batch-norm) are the tutorial's; at 128x128 the output is 88x88."""
    return ValidUNet(num_classes, in_channels, depth, base_width, batch_norm)
