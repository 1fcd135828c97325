"""U-Net decoder on a torchvision ResNet encoder (resnet18, resnet34), ImageNet weights optional.

The encoder is torchvision's ResNet without its classifier (same state-dict keys, so
torchvision's ImageNet file loads as it is); its five stages give features at 1/2 (``conv1``),
1/4, 1/8, 1/16 and 1/32 of the input. The decoder upsamples the deepest features 2x at a
time, each time concatenated with the encoder's features of that size, then once more to
the input size with a small full-resolution block: so the output is the input size for any
size divisible by 32 (`size_divisor`, the engine pads to it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import ResNet18_Weights, ResNet34_Weights, resnet18, resnet34

from segcli import load_backbone

from .torchvision_models import replace_input_conv
from .unet import conv_block

_ENCODERS = {"resnet18": resnet18, "resnet34": resnet34}
_IMAGENET = {"resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet34": ResNet34_Weights.IMAGENET1K_V1}
# channels of the encoder's features at 1/2, 1/4, 1/8, 1/16, 1/32 (both ResNets: basic blocks)
_ENCODER_WIDTHS = (64, 64, 128, 256, 512)
# channels of the decoder's blocks at 1/16, 1/8, 1/4, 1/2 and 1/1 (as segmentation_models's)
_DECODER_WIDTHS = (256, 128, 64, 32, 16)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet's layers up to ``layer4``, returning the feature of each stride."""

    def __init__(self, name: str) -> None:
        super().__init__()
        resnet = _ENCODERS[name](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = (
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
        )
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        half = self.relu(self.bn1(self.conv1(x)))
        quarter = self.layer1(self.maxpool(half))
        eighth = self.layer2(quarter)
        sixteenth = self.layer3(eighth)
        return [half, quarter, eighth, sixteenth, self.layer4(sixteenth)]


class UNetResNet(nn.Module):
    """U-Net decoder with skip connections on a `ResNetEncoder`."""

    size_divisor = 32
    head_prefixes = ("head.",)

    def __init__(self, num_classes: int, encoder: str = "resnet18") -> None:
        super().__init__()
        if encoder not in _ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(_ENCODERS)}, got {encoder!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.encoder = ResNetEncoder(encoder)
        skips = (*reversed(_ENCODER_WIDTHS[:-1]), 0)  # 1/16 .. 1/2, none at full size
        below = (_ENCODER_WIDTHS[-1], *_DECODER_WIDTHS[:-1])
        self.decoder = nn.ModuleList(
            conv_block(width_below + skip, width, batch_norm=True)
            for width_below, skip, width in zip(below, skips, _DECODER_WIDTHS, strict=True)
        )
        self.head = nn.Conv2d(_DECODER_WIDTHS[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        for block in self.decoder:
            skip = skips.pop() if skips else None
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x if skip is None else torch.cat([x, skip], dim=1))
        return self.head(x)


def build_unet_resnet(
    num_classes: int,
    in_channels: int = 3,
    *,
    encoder: str = "resnet18",
    backbone_weights: str | None = None,
) -> UNetResNet:
    """U-Net on a torchvision ResNet encoder. `encoder`: resnet18 | resnet34;
    `backbone_weights`: ``imagenet`` (torchvision's ImageNet weights for `encoder`, through
    torch hub's cache; `segcli weights fetch resnet18` downloads them ahead) or a torchvision
    ResNet state dict file (its classifier ``fc.`` is not used). Grey input (1 channel)
    averages the first convolution's RGB kernels, so pretrained weights still apply."""
    model = UNetResNet(num_classes, encoder)
    if backbone_weights:
        load_backbone(
            model,
            model.encoder,
            backbone_weights,
            {"imagenet": _IMAGENET[encoder].url},
            model_name="unet-resnet",
            target=f"the {encoder} encoder of unet-resnet",
            ignore_prefixes=("fc.",),
        )
    if in_channels != 3:
        replace_input_conv(model.encoder, "conv1", in_channels)
    return model


# The published files `segcli weights fetch|list` know for this model, by name.
build_unet_resnet.published_weights = {  # type: ignore[attr-defined]
    encoder: weights.url for encoder, weights in _IMAGENET.items()
}
