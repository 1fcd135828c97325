"""Architecture facts: parameter counts, the valid-convolution U-Net's sizes, option errors."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import segmentation

from segcli.config import build_config
from segcli.errors import UsageError
from segcli.plugins import get_plugins

MODELS = get_plugins().models
TORCHVISION = {
    "deeplabv3-resnet50": (segmentation.deeplabv3_resnet50, True),
    "deeplabv3-resnet101": (segmentation.deeplabv3_resnet101, True),
    "fcn-resnet50": (segmentation.fcn_resnet50, True),
    "lraspp-mobilenet-v3": (segmentation.lraspp_mobilenet_v3_large, False),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n != "lraspp-mobilenet-v3" else n
        for n in TORCHVISION
    ],
)
@pytest.mark.parametrize("num_classes", [3, 21])
def test_torchvision_parameter_counts_equal_torchvision(name, num_classes):
    builder, has_aux = TORCHVISION[name]
    options = {"aux_loss": False} if has_aux else {}
    reference = builder(weights=None, weights_backbone=None, num_classes=num_classes, **options)
    assert _count(MODELS.get(name)(num_classes)) == _count(reference)


@pytest.mark.parametrize(("num_classes", "expected"), [(20, 2_064_256), (7, 2_063_411)])
def test_erfnet_parameter_count(num_classes, expected):
    # about 2.1 M for 20 classes, as in the paper (20 = Cityscapes' 19 + void); 7 for IDD-Lite
    assert _count(MODELS.get("erfnet")(num_classes)) == expected


def test_valid_unet_is_the_tutorials_shape():
    model = MODELS.get("unet-valid")(1, 1)
    assert model(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 88, 88)
    assert [block[0].out_channels for block in model.encoder] == [16, 32, 64]


def test_valid_unet_refuses_too_small_inputs_clearly():
    model = MODELS.get("unet-valid")(2, 3)
    with pytest.raises(UsageError, match="at least 44x44 pixels, got 40x60"):
        model(torch.zeros(1, 3, 40, 60))


def test_engine_gives_valid_unet_logits_at_the_input_size():
    from segcli.building import forward

    model = MODELS.get("unet-valid")(3, 3, base_width=4)
    assert forward(model, torch.zeros(2, 3, 61, 75)).shape == (2, 3, 61, 75)


@pytest.mark.parametrize(
    ("name", "divisor"),
    [("unet", 16), ("erfnet", 8), ("fcn8s-vgg", 32), ("lraspp-mobilenet-v3", 16)],
)
def test_size_divisors(name, divisor):
    options = {"head_width": 8} if name == "fcn8s-vgg" else {}
    assert MODELS.get(name)(2, **options).size_divisor == divisor


def test_unet_on_grey_images_takes_one_channel():
    model = MODELS.get("unet")(2, 1, depth=2, base_width=4)
    assert model.stem[0].in_channels == 1


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("fcn8s-vgg", {"backbone": "vgg11"}, "backbone must be one of vgg16, vgg19"),
        ("unet", {"depth": 0}, "depth must be at least 1"),
        ("unet-valid", {"base_width": 0}, "base_width must be at least 1"),
    ],
)
def test_bad_options_are_explained(name, options, message):
    with pytest.raises(ValueError, match=message):
        MODELS.get(name)(2, **options)


def test_engine_lists_options_of_a_model():
    from segcli.building import build_model
    from segcli.data.format import ClassInfo, DatasetInfo
    from segcli.errors import ConfigError

    info = DatasetInfo("x", [ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (1, 1, 1))], {})
    config = build_config({"model": {"name": "erfnet", "droput": 0.1}})
    with pytest.raises(ConfigError, match="options: dropout, backbone_weights"):
        build_model(config, info)
