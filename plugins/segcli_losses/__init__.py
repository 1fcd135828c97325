"""Built-in losses, registered like any third-party loss plugin.

Only names and import paths live here: torch is imported when a loss is built. Sums such
as ``ce+dice`` or ``ce:1.0+dice:0.5`` are assembled by ``segcli.losses.build_loss``.
"""

import segcli

_LOSSES = [
    (
        "ce",
        "segcli_losses.cross_entropy:build_cross_entropy",
        "Cross-entropy (options: class_weights=[..]|inverse|median|enet, label_smoothing=0)",
    ),
    (
        "bce",
        "segcli_losses.cross_entropy:build_binary_cross_entropy",
        "Binary cross-entropy on one logit; the model gets 1 output (option: pos_weight)",
    ),
    (
        "dice",
        "segcli_losses.overlap:build_dice",
        "Soft Dice, multi-class (softmax) or binary (1 logit) (option: smooth=1)",
    ),
    (
        "focal",
        "segcli_losses.focal:build_focal",
        "Focal loss: CE scaled by (1-p)^gamma, for hard pixels (options: gamma=2, alpha)",
    ),
    (
        "lovasz",
        "segcli_losses.lovasz:build_lovasz",
        "Lovasz-Softmax / Lovasz hinge: optimises IoU directly (option: per_image=false)",
    ),
    (
        "tversky",
        "segcli_losses.overlap:build_tversky",
        "Tversky: Dice with FP/FN weights (options: alpha=0.3, beta=0.7, smooth=1)",
    ),
]


@segcli.hookimpl
def register_losses(register):
    for name, target, description in _LOSSES:
        register(name, target, description)
