"""ERFNet (Romera et al. 2017): factorised residual blocks, a real-time encoder-decoder.

The layer layout follows the authors' reference code (eduardoramosromera/erfnet_pytorch),
so their state dicts load; the encoder's stand-alone classifier, used only to pre-train
the encoder alone, is left out because it plays no part in the full network.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segcli import load_backbone


class DownsamplerBlock(nn.Module):
    """Strided 3x3 convolution concatenated with max-pooling: halves the size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1d(nn.Module):
    """Residual block of two factorised (3x1 then 1x3) convolution pairs, the second dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(
            channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1)
        )
        self.conv1x3_2 = nn.Conv2d(
            channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation)
        )
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.dropout(self.bn2(self.conv1x3_2(out)))
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, in_channels: int, dropout: float) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(in_channels, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1d(64, dropout / 10, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1d(128, dropout, d) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return x


class Decoder(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                UpsamplerBlock(128, 64),
                NonBottleneck1d(64, 0.0, 1),
                NonBottleneck1d(64, 0.0, 1),
                UpsamplerBlock(64, 16),
                NonBottleneck1d(16, 0.0, 1),
                NonBottleneck1d(16, 0.0, 1),
            ]
        )
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)


class ERFNet(nn.Module):
    """Needs sizes divisible by 8, which the engine provides (`size_divisor`)."""

    size_divisor = 8
    head_prefixes = ("decoder.output_conv.",)

    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = 0.3) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, dropout)
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_erfnet(
    num_classes: int,
    in_channels: int = 3,
    *,
    dropout: float = 0.3,
    backbone_weights: str | None = None,
) -> ERFNet:
    """ERFNet. `dropout`: of the dilated encoder blocks (a tenth of it in the first five,
    as in the paper); `backbone_weights`: an encoder state dict (e.g. the authors'
    ImageNet-pretrained encoder; its classifier keys are left out). No weights are published
    for it by name: torchvision has none."""
    model = ERFNet(num_classes, in_channels, dropout)
    if backbone_weights:
        load_backbone(
            model,
            model.encoder,
            backbone_weights,
            {},
            model_name="erfnet",
            target="the ERFNet encoder",
            ignore_prefixes=("output_conv.",),
        )
    return model
