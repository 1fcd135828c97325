"""torchvision's segmentation models, returning a logits tensor, with pretrained weights.

The modules are torchvision's own (built with ``weights=None, weights_backbone=None``);
only ``forward`` is ours, to return the ``out`` tensor instead of a dict. The state-dict
keys stay torchvision's, so its files load as they are. ``backbone_weights`` takes a local
file or a name: ``imagenet`` (the classifier weights torchvision's builders use for the
backbone) or ``coco`` (the whole segmentation model, trained on COCO with the VOC classes),
fetched through torch hub's cache by `segcli.weights.load_backbone`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
    segmentation,
)
from torchvision.models.segmentation.deeplabv3 import ASPPPooling
from torchvision.models.segmentation.lraspp import LRASPP

from segcli import load_backbone, single_value_safe


class SegmentationLogits(nn.Module):
    """A torchvision segmentation model (backbone + classifier) whose forward returns logits."""

    ignore_prefixes = ("aux_classifier.",)

    def __init__(self, model: nn.Module, size_divisor: int, head_prefixes: tuple[str, ...]):
        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier
        self._takes_feature_dict = isinstance(model, LRASPP)
        self.size_divisor = size_divisor
        self.head_prefixes = head_prefixes
        for module in self.classifier.modules():
            if isinstance(module, ASPPPooling):
                # ASPP's image-pooling branch normalises a 1x1 map
                module[2] = single_value_safe(module[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        logits = self.classifier(features if self._takes_feature_dict else features["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _input_conv(model: SegmentationLogits) -> tuple[nn.Module, str]:
    """The module holding the backbone's input convolution, and its attribute name there."""
    if hasattr(model.backbone, "conv1"):  # ResNet
        return model.backbone, "conv1"
    return getattr(model.backbone, "0"), "0"  # MobileNetV3: Conv2dNormActivation, conv first


def replace_input_conv(parent: nn.Module, attribute: str, in_channels: int) -> None:
    """Replace an RGB input convolution by one taking `in_channels` channels.

    The RGB kernels are averaged and scaled by 3/in_channels, so a grey image gives the
    same response as that grey image copied to three channels (pretrained weights survive).
    """
    old: nn.Conv2d = getattr(parent, attribute)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        old.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.mean(1, keepdim=True).expand_as(new.weight) * 3 / in_channels)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, attribute, new)


def published_urls(imagenet: WeightsEnum, coco: WeightsEnum) -> dict[str, str]:
    """`backbone_weights` names and their addresses: torchvision's own weights."""
    return {"imagenet": imagenet.url, "coco": coco.url}


def _build(
    builder: Callable[..., nn.Module],
    name: str,
    num_classes: int,
    in_channels: int,
    backbone_weights: str | None,
    published: dict[str, str],
    size_divisor: int,
    head_prefixes: tuple[str, ...],
) -> SegmentationLogits:
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if builder is not segmentation.lraspp_mobilenet_v3_large:
        kwargs["aux_loss"] = False
    model = SegmentationLogits(builder(**kwargs), size_divisor, head_prefixes)
    if backbone_weights:
        # an ImageNet classifier's file into the backbone, or a whole torchvision
        # segmentation model's (COCO: keys ``backbone.*``) into the model, head aside
        load_backbone(
            model,
            model.backbone,
            backbone_weights,
            published,
            model_name=name,
            target=f"the backbone of {name}",
            ignore_prefixes=("fc.", "classifier."),
            whole_model_prefix="backbone.",
        )
    if in_channels != 3:
        replace_input_conv(*_input_conv(model), in_channels)
    return model


def build_deeplabv3_resnet50(
    num_classes: int, in_channels: int = 3, *, backbone_weights: str | None = None
) -> SegmentationLogits:
    """torchvision DeepLabV3 with a ResNet-50 backbone (output stride 8), no auxiliary head."""
    return _build(
        segmentation.deeplabv3_resnet50,
        "deeplabv3-resnet50",
        num_classes,
        in_channels,
        backbone_weights,
        build_deeplabv3_resnet50.published_weights,  # type: ignore[attr-defined]
        8,
        ("classifier.4.",),
    )


def build_deeplabv3_resnet101(
    num_classes: int, in_channels: int = 3, *, backbone_weights: str | None = None
) -> SegmentationLogits:
    """torchvision DeepLabV3 with a ResNet-101 backbone (output stride 8), no auxiliary head."""
    return _build(
        segmentation.deeplabv3_resnet101,
        "deeplabv3-resnet101",
        num_classes,
        in_channels,
        backbone_weights,
        build_deeplabv3_resnet101.published_weights,  # type: ignore[attr-defined]
        8,
        ("classifier.4.",),
    )


def build_fcn_resnet50(
    num_classes: int, in_channels: int = 3, *, backbone_weights: str | None = None
) -> SegmentationLogits:
    """torchvision FCN with a ResNet-50 backbone (output stride 8), no auxiliary head."""
    return _build(
        segmentation.fcn_resnet50,
        "fcn-resnet50",
        num_classes,
        in_channels,
        backbone_weights,
        build_fcn_resnet50.published_weights,  # type: ignore[attr-defined]
        8,
        ("classifier.4.",),
    )


def build_lraspp_mobilenet_v3(
    num_classes: int, in_channels: int = 3, *, backbone_weights: str | None = None
) -> SegmentationLogits:
    """torchvision LR-ASPP with a MobileNetV3-Large backbone (output stride 16)."""
    return _build(
        segmentation.lraspp_mobilenet_v3_large,
        "lraspp-mobilenet-v3",
        num_classes,
        in_channels,
        backbone_weights,
        build_lraspp_mobilenet_v3.published_weights,  # type: ignore[attr-defined]
        16,
        ("classifier.low_classifier.", "classifier.high_classifier."),
    )


# `backbone_weights` names and addresses, also what `segcli weights fetch|list` know
build_deeplabv3_resnet50.published_weights = published_urls(  # type: ignore[attr-defined]
    ResNet50_Weights.IMAGENET1K_V1,
    segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
)
build_deeplabv3_resnet101.published_weights = published_urls(  # type: ignore[attr-defined]
    ResNet101_Weights.IMAGENET1K_V1,
    segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
)
build_fcn_resnet50.published_weights = published_urls(  # type: ignore[attr-defined]
    ResNet50_Weights.IMAGENET1K_V1,
    segmentation.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
)
build_lraspp_mobilenet_v3.published_weights = published_urls(  # type: ignore[attr-defined]
    MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    segmentation.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
)
