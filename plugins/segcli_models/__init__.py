"""Built-in segmentation architectures, registered like any third-party model plugin."""

import segcli


@segcli.hookimpl
def register_models(register):
    register(
        "unet",
        "segcli_models.unet:build_unet",
        "U-Net with 'same' padding (options: depth, base_width, batch_norm, bilinear)",
    )
