"""What a dataset preparer returns: a `DatasetPlan` of `Sample`s, and how masks are read.

A dataset plugin only knows its raw layout: the classes, the (image, mask-source) pairs per
split, how to read a mask's raw values and how raw values map to class ids. The prepare
pipeline (`segcli.data.prepare`) does the rest for every dataset alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segcli.data.format import ClassInfo


@dataclass
class Sample:
    """One image and where its label comes from. `mask` is whatever `read_mask` understands."""

    split: str
    stem: str
    image: Path | None
    mask: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DrawnMask:
    """What `read_mask` returns for a mask drawn from regions that may overlap (annotations):
    the label values, and the pixels each class lost to another, as
    (class id drawn under, class id on top) -> pixels. The report sums them per class pair."""

    values: np.ndarray
    contested: dict[tuple[int, int], int]


@dataclass
class DatasetPlan:
    """What a preparer returns: everything needed to write the canonical dataset.

    read_mask(sample) -> 2-D integer array of *raw* label values (any dtype), or a DrawnMask.
    value_map: raw value -> class id (or 255 = ignore); None keeps raw values as ids.
    read_image(sample) -> (H, W[, C]) uint8 array, for samples without an image file
    (generated data, slices of a volume); otherwise the image file's bytes are kept.
    read_mask and read_image must be module-level functions: they run in worker processes.
    """

    name: str
    classes: list[ClassInfo]
    samples: list[Sample]
    read_mask: Callable[[Sample], np.ndarray] | None = None
    value_map: dict[int, int] | None = None
    read_image: Callable[[Sample], np.ndarray] | None = None
    image_channels: int = 3
    notes: list[str] = field(default_factory=list)
    unpaired_images: list[str] = field(default_factory=list)
    unpaired_masks: list[str] = field(default_factory=list)
    stray_to_ignore: bool = False
