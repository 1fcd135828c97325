"""Built-in segmentation architectures, registered like any third-party model plugin.

Only names and import paths live here: torch is imported when a model is built.
"""

import segcli

_MODELS = [
    (
        "unet",
        "segcli_models.unet:build_unet",
        "U-Net, 'same' padding, output = input size (options: depth=4, base_width=64, "
        "max_width, batch_norm=true, bilinear=true); 1 or 3 input channels",
    ),
    (
        "unet-valid",
        "segcli_models.unet_valid:build_unet_valid",
        "U-Net with valid convolutions and centre-cropped skips (TGS tutorial); output smaller "
        "than input, resized by the engine (options: depth=2, base_width=16, batch_norm=false)",
    ),
    (
        "unet-resnet",
        "segcli_models.unet_resnet:build_unet_resnet",
        "U-Net decoder on a torchvision ResNet encoder, output = input size (options: "
        "encoder=resnet18|resnet34, backbone_weights=imagenet|PATH); any input channels",
    ),
    (
        "deeplabv3-resnet50",
        "segcli_models.torchvision_models:build_deeplabv3_resnet50",
        "torchvision DeepLabV3, ResNet-50 backbone, 39.6 M parameters "
        "(option: backbone_weights=imagenet|coco|PATH)",
    ),
    (
        "deeplabv3-resnet101",
        "segcli_models.torchvision_models:build_deeplabv3_resnet101",
        "torchvision DeepLabV3, ResNet-101 backbone, 58.6 M parameters "
        "(option: backbone_weights=imagenet|coco|PATH)",
    ),
    (
        "fcn-resnet50",
        "segcli_models.torchvision_models:build_fcn_resnet50",
        "torchvision FCN, ResNet-50 backbone, 33.0 M parameters "
        "(option: backbone_weights=imagenet|coco|PATH)",
    ),
    (
        "lraspp-mobilenet-v3",
        "segcli_models.torchvision_models:build_lraspp_mobilenet_v3",
        "torchvision LR-ASPP, MobileNetV3-Large backbone, 3.2 M parameters, fast "
        "(option: backbone_weights=imagenet|coco|PATH)",
    ),
    (
        "fcn8s-vgg",
        "segcli_models.fcn8s:build_fcn8s",
        "FCN-8s on VGG features (options: backbone=vgg16|vgg19, head_width=4096, dropout=0.5, "
        "backbone_weights=imagenet|PATH)",
    ),
    (
        "erfnet",
        "segcli_models.erfnet:build_erfnet",
        "ERFNet, real-time encoder-decoder, 2.1 M parameters (options: dropout=0.3, "
        "backbone_weights=PATH)",
    ),
]


@segcli.hookimpl
def register_models(register):
    for name, target, description in _MODELS:
        register(name, target, description)
