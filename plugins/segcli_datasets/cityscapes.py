"""`cityscapes`: Cityscapes fine annotations, the 19 standard training classes (255 = ignore).

Layout (as downloaded: leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip)::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

`*_labelIds.png` holds the 34 label ids of the official table (cityscapesScripts'
labels.py, copied below); the usual training set maps them to 19 train ids, every other id
(void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) to ignore.
The test labels are withheld by the benchmark: test images are kept without masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import IGNORE_INDEX, ClassInfo, DataError, DatasetPlan, Sample

from .common import STRAY_HELP
from .encodings import read_label_values

# (label id, name, train id, colour): the official table; train id 255 = ignored in training.
LABELS = [
    (0, "unlabeled", 255, (0, 0, 0)),
    (1, "ego vehicle", 255, (0, 0, 0)),
    (2, "rectification border", 255, (0, 0, 0)),
    (3, "out of roi", 255, (0, 0, 0)),
    (4, "static", 255, (0, 0, 0)),
    (5, "dynamic", 255, (111, 74, 0)),
    (6, "ground", 255, (81, 0, 81)),
    (7, "road", 0, (128, 64, 128)),
    (8, "sidewalk", 1, (244, 35, 232)),
    (9, "parking", 255, (250, 170, 160)),
    (10, "rail track", 255, (230, 150, 140)),
    (11, "building", 2, (70, 70, 70)),
    (12, "wall", 3, (102, 102, 156)),
    (13, "fence", 4, (190, 153, 153)),
    (14, "guard rail", 255, (180, 165, 180)),
    (15, "bridge", 255, (150, 100, 100)),
    (16, "tunnel", 255, (150, 120, 90)),
    (17, "pole", 5, (153, 153, 153)),
    (18, "polegroup", 255, (153, 153, 153)),
    (19, "traffic light", 6, (250, 170, 30)),
    (20, "traffic sign", 7, (220, 220, 0)),
    (21, "vegetation", 8, (107, 142, 35)),
    (22, "terrain", 9, (152, 251, 152)),
    (23, "sky", 10, (70, 130, 180)),
    (24, "person", 11, (220, 20, 60)),
    (25, "rider", 12, (255, 0, 0)),
    (26, "car", 13, (0, 0, 142)),
    (27, "truck", 14, (0, 0, 70)),
    (28, "bus", 15, (0, 60, 100)),
    (29, "caravan", 255, (0, 0, 90)),
    (30, "trailer", 255, (0, 0, 110)),
    (31, "train", 16, (0, 80, 100)),
    (32, "motorcycle", 17, (0, 0, 230)),
    (33, "bicycle", 18, (119, 11, 32)),
]
TRAIN_CLASSES = sorted(
    (ClassInfo(train_id, name, color) for _, name, train_id, color in LABELS if train_id != 255),
    key=lambda c: c.id,
)
LABEL_ID_CLASSES = [ClassInfo(label_id, name, color) for label_id, name, _, color in LABELS]
IMAGE_END, LABEL_END = "_leftImg8bit.png", "_gtFine_labelIds.png"
LAYOUT_HINT = (
    "expected leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png and "
    "gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png"
)


def prepare(
    raw: Path | None,
    *,
    label_ids: Annotated[
        bool, "keep all 34 label ids as classes instead of the 19 training classes"
    ] = False,
    include_test: Annotated[bool, "also copy the test images (their labels are withheld)"] = True,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """Cityscapes fine annotations: 19 training classes (or the 34 label ids), 255 = ignore."""
    root = _find_root(Path(raw))
    samples: list[Sample] = []
    unpaired_images: list[str] = []
    unpaired_masks: list[str] = []
    for split in ("train", "val", "test"):
        images = _by_key(root / "leftImg8bit" / split, IMAGE_END)
        if split == "test":
            if include_test:
                samples += [Sample(split, key, path) for key, path in sorted(images.items())]
            continue
        if not images:
            raise DataError(
                f"Cityscapes split {split} has no images in {root / 'leftImg8bit' / split}",
                hint=LAYOUT_HINT,
            )
        labels = _by_key(root / "gtFine" / split, LABEL_END)
        paired = sorted(images.keys() & labels.keys())
        samples += [Sample(split, key, images[key], labels[key]) for key in paired]
        unpaired_images += [str(images[k]) for k in sorted(images.keys() - labels.keys())]
        unpaired_masks += [str(labels[k]) for k in sorted(labels.keys() - images.keys())]
    if label_ids:
        classes = LABEL_ID_CLASSES
        value_map = {label_id: label_id for label_id, *_ in LABELS}
        notes = ["label ids 0..33 kept as classes (--label-ids); nothing is ignored"]
    else:
        classes = TRAIN_CLASSES
        value_map = {label_id: train_id for label_id, _, train_id, _ in LABELS}
        ignored = [name for _, name, train_id, _ in LABELS if train_id == IGNORE_INDEX]
        notes = [
            "label ids -> the 19 training classes; ignored (255): " + ", ".join(ignored),
            "--label-ids keeps all 34 label ids as classes",
        ]
    if include_test:
        notes.append("test images kept without masks (the benchmark withholds their labels)")
    return DatasetPlan(
        name="cityscapes",
        classes=list(classes),
        samples=samples,
        read_mask=read_mask,
        value_map=value_map,
        notes=notes,
        unpaired_images=unpaired_images,
        unpaired_masks=unpaired_masks,
        stray_to_ignore=ignore_stray_values,
    )


def _find_root(raw: Path) -> Path:
    """The folder holding leftImg8bit and gtFine: RAW itself or RAW/cityscapes."""
    for candidate in (raw, raw / "cityscapes"):
        if (candidate / "leftImg8bit").is_dir():
            if not (candidate / "gtFine").is_dir():
                raise DataError(
                    f"Cityscapes folder {candidate} has no gtFine folder",
                    hint=LAYOUT_HINT + " (unzip gtFine_trainvaltest.zip next to leftImg8bit)",
                )
            return candidate
    raise DataError(f"{raw} is not a Cityscapes folder (no leftImg8bit)", hint=LAYOUT_HINT)


def _by_key(folder: Path, ending: str) -> dict[str, Path]:
    """Files `<city>/<city>_<seq>_<frame><ending>` keyed `<city>_<seq>_<frame>` (unique)."""
    if not folder.is_dir():
        return {}
    return {path.name[: -len(ending)]: path for path in folder.glob(f"*/*{ending}")}


def read_mask(sample: Sample) -> np.ndarray:
    return read_label_values(sample.mask)
