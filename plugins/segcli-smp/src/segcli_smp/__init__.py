"""segmentation_models_pytorch's architectures as segcli models.

Only names, import paths and descriptions live here: torch and smp are imported when a
model is built, so `segcli --help`, `segcli plugins` and `segcli list` stay fast.
"""

import segcli

_OPTIONS = (
    "encoder=resnet34 (any smp encoder or tu-<timm model>), encoder_depth={depth}, backbone_weights"
)

# (registered name, factory in segcli_smp.models, what it is, its encoder_depth default)
_MODELS = [
    ("smp-unet", "unet", "U-Net: encoder-decoder with skip connections", 5),
    ("smp-unetplusplus", "unetplusplus", "U-Net++: nested, densely connected skips", 5),
    ("smp-fpn", "fpn", "FPN: feature pyramid, merged at 1/4 scale", 5),
    ("smp-pspnet", "pspnet", "PSPNet: pyramid pooling on a 1/8 feature map", 3),
    ("smp-deeplabv3plus", "deeplabv3plus", "DeepLabV3+: atrous pyramid pooling and a decoder", 5),
    ("smp-linknet", "linknet", "LinkNet: light decoder adding encoder features", 5),
    ("smp-manet", "manet", "MA-Net: multi-scale attention decoder", 5),
    ("smp-pan", "pan", "PAN: pyramid attention network", 5),
    ("smp-upernet", "upernet", "UPerNet: pyramid pooling and FPN fusion", 5),
    ("smp-segformer", "segformer", "Segformer's all-MLP decoder", 5),
]


@segcli.hookimpl
def register_models(register):
    for name, factory, summary, depth in _MODELS:
        options = _OPTIONS.format(depth=depth)
        register(name, f"segcli_smp.models:{factory}", f"smp {summary} (options: {options})")


@segcli.hookimpl
def register_losses(register):
    register(
        "smp-dice",
        "segcli_smp.losses:dice",
        "smp's multiclass Dice loss on softmax probabilities (options: log_loss=false, "
        'smooth=0.0); combine it: loss.name = "ce+smp-dice"',
    )
