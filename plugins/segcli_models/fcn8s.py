"""FCN-8s (Long, Shelhamer & Darrell 2015) on torchvision's VGG-16 or VGG-19 features.

The convolutions are 'same'-padded (the paper's 100-pixel input padding and crop offsets
are not needed): fc6/fc7 are convolutions on pool5, their class scores are upsampled 2x and
fused with pool4's, again 2x with pool3's, then 8x to the input size. The transposed
convolutions start as bilinear interpolation, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VGG16_Weights, VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from segcli import load_backbone

from .torchvision_models import replace_input_conv

_BACKBONES = {"vgg16": "D", "vgg19": "E"}  # torchvision's configuration letters
_IMAGENET = {"vgg16": VGG16_Weights.IMAGENET1K_V1, "vgg19": VGG19_Weights.IMAGENET1K_V1}


def vgg_features(backbone: str) -> nn.Sequential:
    """torchvision's VGG feature layers (same layers and keys as ``vgg16().features``),
    initialised as torchvision does, without building the 120 M-parameter classifier that
    FCN does not use."""
    features = make_layers(cfgs[_BACKBONES[backbone]], batch_norm=False)
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return features


def _bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    steps = torch.arange(size, dtype=torch.float32)
    profile = 1 - (steps - centre).abs() / factor
    kernel = torch.zeros(channels, channels, size, size)
    kernel[range(channels), range(channels)] = profile[:, None] * profile[None, :]
    return kernel


def _upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(
        channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
    )
    with torch.no_grad():
        up.weight.copy_(_bilinear_kernel(channels, 2 * factor))
    return up


class FCN8s(nn.Module):
    """FCN-8s; needs sizes divisible by 32, which the engine provides (`size_divisor`)."""

    size_divisor = 32
    head_prefixes = (
        "score_fr.",
        "score_pool4.",
        "score_pool3.",
        "upscore2.",
        "upscore_pool4.",
        "upscore8.",
    )

    def __init__(
        self,
        num_classes: int,
        backbone: str = "vgg16",
        head_width: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if backbone not in _BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(_BACKBONES)}, got {backbone!r}")
        self.features = vgg_features(backbone)
        pools = [i for i, layer in enumerate(self.features) if isinstance(layer, nn.MaxPool2d)]
        self._pool3, self._pool4 = pools[2], pools[3]
        self.fc6 = nn.Sequential(
            nn.Conv2d(512, head_width, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout2d(dropout)
        )
        self.fc7 = nn.Sequential(
            nn.Conv2d(head_width, head_width, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout)
        )
        self.score_fr = nn.Conv2d(head_width, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        self.upscore2 = _upsampler(num_classes, 2)
        self.upscore_pool4 = _upsampler(num_classes, 2)
        self.upscore8 = _upsampler(num_classes, 8)
        # the paper zero-initialises the skip scores so training starts from FCN-32s
        for score in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == self._pool3:
                pool3 = x
            elif index == self._pool4:
                pool4 = x
        scores = self.score_fr(self.fc7(self.fc6(x)))
        scores = self.upscore2(scores) + self.score_pool4(pool4)
        scores = self.upscore_pool4(scores) + self.score_pool3(pool3)
        return self.upscore8(scores)


def build_fcn8s(
    num_classes: int,
    in_channels: int = 3,
    *,
    backbone: str = "vgg16",
    head_width: int = 4096,
    dropout: float = 0.5,
    backbone_weights: str | None = None,
) -> FCN8s:
    """FCN-8s on VGG features. `backbone`: vgg16 | vgg19; `head_width`: channels of the
    fc6/fc7 convolutions (4096 in the paper); `backbone_weights`: ``imagenet`` (torchvision's
    VGG weights for `backbone`, through torch hub's cache) or a torchvision VGG state dict
    file (its `features.*` are loaded, its classifier is not used)."""
    model = FCN8s(num_classes, backbone, head_width, dropout)
    if backbone_weights:
        load_backbone(
            model,
            model.features,
            backbone_weights,
            {"imagenet": _IMAGENET[backbone].url},
            model_name="fcn8s-vgg",
            target=f"the {backbone} features of fcn8s-vgg",
            ignore_prefixes=("classifier.",),
        )
    if in_channels != 3:
        replace_input_conv(model.features, "0", in_channels)
    return model


# The published files `segcli weights fetch|list` know for this model: `backbone_weights=imagenet`
# picks the one of its `backbone`.
build_fcn8s.published_weights = {  # type: ignore[attr-defined]
    backbone: weights.url for backbone, weights in _IMAGENET.items()
}
