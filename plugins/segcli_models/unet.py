"""U-Net (Ronneberger et al. 2015) with 'same' padding, so the output matches the input size."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(
    in_channels: int, out_channels: int, batch_norm: bool, padding: int = 1
) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU (and batch-norm); `padding=0` is the valid variant."""
    layers: list[nn.Module] = []
    for channels_in in (in_channels, out_channels):
        layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=padding, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections.

    Any input size works when called directly (upsampled maps are padded to their skip's
    size); `size_divisor` lets the engine pad to a multiple of 2**depth instead, so no
    pooling step floors away a row and the borders stay aligned.
    """

    head_prefixes = ("head.",)

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_width: int = 64,
        batch_norm: bool = True,
        bilinear: bool = True,
        max_width: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if base_width < 1:
            raise ValueError(f"base_width must be at least 1, got {base_width}")
        self.size_divisor = 2**depth
        widths = [
            min(base_width * 2**i, max_width or base_width * 2**depth) for i in range(depth + 1)
        ]
        self.stem = conv_block(in_channels, widths[0], batch_norm)
        self.down = nn.ModuleList(
            conv_block(widths[i], widths[i + 1], batch_norm) for i in range(depth)
        )
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in reversed(range(depth)):
            if bilinear:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                        nn.Conv2d(widths[i + 1], widths[i], 1),
                    )
                )
            else:
                self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.merge.append(conv_block(2 * widths[i], widths[i], batch_norm))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            skip = skips.pop()
            x = up(x)
            # odd sizes: pooling floored, so pad the upsampled map back to the skip's size
            dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if dy or dx:
                x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            x = merge(torch.cat([skip, x], dim=1))
        return self.head(x)


def build_unet(
    num_classes: int,
    in_channels: int = 3,
    *,
    depth: int = 4,
    base_width: int = 64,
    batch_norm: bool = True,
    bilinear: bool = True,
    max_width: int | None = None,
) -> UNet:
    """U-Net with 'same' padding: `depth` poolings, `base_width` channels at full resolution
    (doubling per level), batch-norm after every convolution, and bilinear upsampling
    followed by a 1x1 convolution (or a 2x2 transposed convolution when `bilinear=False`).
    `max_width` caps the channel count of the deeper levels (512 gives the common
    64..512 U-Net of depth 4)."""
    return UNet(num_classes, in_channels, depth, base_width, batch_norm, bilinear, max_width)
