"""segcli: semantic segmentation from a folder of images to a trained model, with plugins.

`__all__` below is segcli's public API, the one list of what a plugin may import (always as
``from segcli import NAME``); docs/plugins.md documents each name, and tests keep the two
lists equal and the plugins under plugins/ within it. Everything else is internal and may
change in any release.

Importing this package imports neither torch nor any plugin: each name's module is
imported the first time the name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("segcli")

# Each public name and the module that defines it, imported on first use.
_PUBLIC_NAMES: dict[str, str] = {
    # errors: one type per kind of failure (docs/errors.md)
    "SegcliError": "segcli.errors",
    "UsageError": "segcli.errors",
    "ConfigError": "segcli.errors",
    "DataError": "segcli.errors",
    "PluginError": "segcli.errors",
    "CheckpointError": "segcli.errors",
    "WeightsUnavailable": "segcli.errors",
    "OutputError": "segcli.errors",
    "ResourceError": "segcli.errors",
    "shortened": "segcli.errors",
    # dataset preparers
    "DatasetPlan": "segcli.data.plan",
    "Sample": "segcli.data.plan",
    "ClassInfo": "segcli.data.format",
    "IGNORE_INDEX": "segcli.data.format",
    "IMAGE_SUFFIXES": "segcli.data.format",
    "open_image": "segcli.data.images",
    "decode_image": "segcli.data.images",
    "page_count": "segcli.data.images",
    "image_size": "segcli.data.images",
    "read_image": "segcli.data.images",
    "read_json": "segcli.json_files",
    "ClassChoice": "segcli.data.class_map",
    "OTHERS": "segcli.data.class_map",
    "choose_classes": "segcli.data.class_map",
    "read_classes_file": "segcli.data.class_map",
    "AnnotatedImage": "segcli.data.annotations",
    "Region": "segcli.data.annotations",
    "DRAW_ORDERS": "segcli.data.annotations",
    "POLYGON_PROBLEMS": "segcli.data.annotations",
    "as_points": "segcli.data.annotations",
    "polygon_problem": "segcli.data.annotations",
    "polygon_region": "segcli.data.annotations",
    "rle_region": "segcli.data.annotations",
    "rectangle_region": "segcli.data.annotations",
    "circle_region": "segcli.data.annotations",
    "line_region": "segcli.data.annotations",
    "point_region": "segcli.data.annotations",
    "mask_region": "segcli.data.annotations",
    "union_region": "segcli.data.annotations",
    "read_annotated_mask": "segcli.data.annotations",
    # models and their weights
    "SingleValueSafeBatchNorm2d": "segcli.nn",
    "single_value_safe": "segcli.nn",
    "make_single_value_safe": "segcli.nn",
    "WeightsFile": "segcli.weights",
    "resolve_weights": "segcli.weights",
    "read_state_dict": "segcli.weights",
    "load_matching": "segcli.weights",
    "record_pretrained": "segcli.weights",
    "load_backbone": "segcli.weights",
    "pretrained_record": "segcli.weights",
    "weights_cache_dir": "segcli.weights",
    "PublishedWeights": "segcli.weights",
    "published_weights": "segcli.weights",
    # loggers
    "Logger": "segcli.hookspecs",
    "scalars": "segcli.runs.metrics",
    "atomic_write": "segcli.files",
    # planners
    "Plan": "segcli.planning",
    "Requirement": "segcli.planning",
    "requirements": "segcli.planning",
    "Timer": "segcli.planning",
    "Fingerprint": "segcli.planning",
    "ClassStats": "segcli.planning",
    "SizeStats": "segcli.planning",
    "Hardware": "segcli.planning",
    "Measurement": "segcli.planning",
    "estimate_pixels_per_second": "segcli.planning",
    # a plugin's own tests: the contract suite
    "check_model": "segcli.testing",
    "check_loss": "segcli.testing",
    "check_metric": "segcli.testing",
    "check_transform": "segcli.testing",
    "check_optimizer": "segcli.testing",
    "check_scheduler": "segcli.testing",
    "pixels_from_matrix": "segcli.testing",
}

__all__ = ["__version__", "hookimpl", *_PUBLIC_NAMES]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC_NAMES:
        raise AttributeError(f"module 'segcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC_NAMES[name]), name)
    globals()[name] = value  # imported once; later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
