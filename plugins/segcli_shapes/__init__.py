"""The `shapes` dataset: synthetic circles, rectangles and triangles, generated from a seed.

It is segcli's embedded default, so the quick start needs no download. Registered
through the `segcli` entry point like any third-party dataset plugin.
"""

import segcli


@segcli.hookimpl
def register_datasets(register):
    register(
        "shapes",
        "segcli_shapes.generate:prepare",
        "Synthetic 128x128 circles/rectangles/triangles on textured backgrounds (4 classes, "
        "no download)",
    )
