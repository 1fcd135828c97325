"""Built-in augmentations, registered like any third-party transform plugin.

Only names and import paths live here: torch and torchvision are imported when a
transform is built. The contract every transform keeps is in ``segcli.hookspecs``
(``register_transforms``) and docs/transforms.md.
"""

import segcli

_TRANSFORMS = [
    ("hflip", "segcli_transforms.joint:hflip", "Mirror left-right with probability p (p=0.5)"),
    ("vflip", "segcli_transforms.joint:vflip", "Mirror top-bottom with probability p (p=0.5)"),
    (
        "scale",
        "segcli_transforms.joint:scale",
        "Zoom about the centre by a factor drawn from range=[min, max] (range=[0.75, 1.25])",
    ),
    (
        "rotate",
        "segcli_transforms.joint:rotate",
        "Rotate about the centre by an angle drawn from [-degrees, degrees] (degrees=15)",
    ),
    (
        "elastic",
        "segcli_transforms.joint:elastic",
        "Smooth random deformation: Gaussian displacements of std displacement px on a grid x grid "
        "lattice, bicubic in between (displacement=10, grid=3)",
    ),
    (
        "crop",
        "segcli_transforms.joint:crop",
        "A random window of size=[height, width] (size=[256, 256]); smaller images are padded, "
        "their masks with ignore",
    ),
    (
        "color_jitter",
        "segcli_transforms.joint:color_jitter",
        "Random brightness, contrast and (colour images) saturation within 1 +- strength "
        "(strength=0.2); the mask is untouched",
    ),
]


@segcli.hookimpl
def register_transforms(register):
    for name, target, description in _TRANSFORMS:
        register(name, target, description)
