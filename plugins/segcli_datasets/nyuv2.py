"""`nyuv2`: NYU Depth v2 in the VOC-like layout, with the 40-class labels (41 with unlabelled).

`Segmentation_40/<name>.png` stores class i as the colour (i, i, i) (or as the grey value i).
Colours are looked up in an exact colour -> class table; a colour that is not in it is an
error, never folded into a class (the tutorial's `r*256 + g*256 + b` hash made different
colours collide).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import DataError, DatasetPlan, Sample

from .common import STRAY_HELP, image_files, make_classes, require_dir
from .encodings import decode_colors, load_mask

NAMES = [
    "unlabelled",
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floor mat",
    "clothes",
    "ceiling",
    "books",
    "refrigerator",
    "television",
    "paper",
    "towel",
    "shower curtain",
    "box",
    "whiteboard",
    "person",
    "night stand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
    "otherstructure",
    "otherfurniture",
    "otherprop",
]
CLASSES = make_classes(NAMES)
COLOR_IDS = tuple(((i, i, i), i) for i in range(len(NAMES)))
LAYOUT_HINT = "expected JPEGImages/<name>.jpg, Segmentation_40/<name>.png, ImageSet/train.txt"


def prepare(
    raw: Path | None,
    *,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """NYUv2 (VOC-like layout): 41 classes, 0 = unlabelled, splits from ImageSet/*.txt."""
    raw = Path(raw)
    images_dir = require_dir(raw / "JPEGImages", "NYUv2 image folder", LAYOUT_HINT)
    labels_dir = require_dir(raw / "Segmentation_40", "NYUv2 label folder", LAYOUT_HINT)
    lists_dir = require_dir(raw / "ImageSet", "NYUv2 split-list folder", LAYOUT_HINT)
    images = {p.stem: p for p in image_files(images_dir)}
    samples: list[Sample] = []
    unpaired_images: list[str] = []
    unpaired_masks: list[str] = []
    listed: set[str] = set()
    for split in ("train", "val", "test"):
        names = _read_list(lists_dir / f"{split}.txt")
        if names is None:
            if split != "test":
                raise DataError(
                    f"NYUv2 split list {lists_dir / f'{split}.txt'} does not exist",
                    hint=LAYOUT_HINT,
                )
            continue
        for name in names:
            label = labels_dir / f"{name}.png"
            listed.add(name)
            if name not in images:
                if label.is_file():
                    unpaired_masks.append(str(label))
                else:
                    raise DataError(
                        f"{lists_dir / f'{split}.txt'} lists {name!r}, which has "
                        f"neither an image nor a label",
                        hint="fix the list",
                    )
            elif label.is_file():
                samples.append(Sample(split, name, images[name], label))
            elif split == "test":
                samples.append(Sample(split, name, images[name]))
            else:
                unpaired_images.append(str(images[name]))
    notes = ["labels: colour (i, i, i) -> class i for i = 0..40 (exact; other colours reported)"]
    left_out = len(images.keys() - listed)
    if left_out:
        notes.append(f"{left_out} images in JPEGImages are in no split list and were left out")
    return DatasetPlan(
        name="nyuv2",
        classes=CLASSES,
        samples=samples,
        read_mask=partial(read_mask, stray_to_ignore=ignore_stray_values),
        value_map={i: i for i in range(len(NAMES))},
        notes=notes,
        unpaired_images=unpaired_images,
        unpaired_masks=unpaired_masks,
        stray_to_ignore=ignore_stray_values,
    )


def _read_list(path: Path) -> list[str] | None:
    """Names in a split list, one a line; extensions and folder parts are tolerated."""
    if not path.is_file():
        return None
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def read_mask(sample: Sample, stray_to_ignore: bool = False) -> np.ndarray:
    array, _ = load_mask(sample.mask)
    if array.ndim == 2:
        return array
    if array.dtype != np.uint8:
        raise DataError(f"NYUv2 label {sample.mask} is {array.dtype}, expected 8-bit")
    return decode_colors(array, COLOR_IDS, sample.mask, stray_to_ignore=stray_to_ignore)
