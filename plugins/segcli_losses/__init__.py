"""Built-in losses, registered like any third-party loss plugin."""

import segcli


@segcli.hookimpl
def register_losses(register):
    register(
        "ce",
        "segcli_losses.cross_entropy:build_cross_entropy",
        "Cross-entropy over classes (options: class_weights, label_smoothing); ignores 255",
    )
