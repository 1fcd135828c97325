"""`idd-lite`: IDD-Lite, the small India Driving Dataset release with the 7 level-1 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import IGNORE_INDEX, ClassInfo, DataError, DatasetPlan, Sample

from .common import STRAY_HELP
from .encodings import read_label_values

CLASSES = [
    ClassInfo(0, "drivable", (128, 64, 128)),
    ClassInfo(1, "non-drivable", (250, 170, 160)),
    ClassInfo(2, "living things", (220, 20, 60)),
    ClassInfo(3, "vehicles", (0, 0, 142)),
    ClassInfo(4, "road-side objects", (220, 220, 0)),
    ClassInfo(5, "far objects", (70, 70, 70)),
    ClassInfo(6, "sky", (70, 130, 180)),
]
VOID = ClassInfo(7, "void", (0, 0, 0))
IMAGE_END, LABEL_END = "_image.jpg", "_label.png"
LAYOUT_HINT = (
    "expected leftImg8bit/{train,val,test}/<seq>/<name>_image.jpg and "
    "gtFine/{train,val}/<seq>/<name>_label.png"
)


def prepare(
    raw: Path | None,
    *,
    void_class: Annotated[
        bool, "make raw 255 (void) an 8th class instead of ignoring it, as the ERFNet recipe did"
    ] = False,
    include_test: Annotated[bool, "also copy the unlabelled test images"] = True,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """IDD-Lite (320x227 driving scenes): 7 classes, raw 255 = void kept as ignore."""
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
        labels = _by_key(root / "gtFine" / split, LABEL_END)
        if not images:
            raise DataError(
                f"IDD-Lite split {split} has no images in {root / 'leftImg8bit' / split}",
                hint=LAYOUT_HINT,
            )
        paired = sorted(images.keys() & labels.keys())
        samples += [Sample(split, k, images[k], labels[k]) for k in paired]
        unpaired_images += [str(images[k]) for k in sorted(images.keys() - labels.keys())]
        unpaired_masks += [str(labels[k]) for k in sorted(labels.keys() - images.keys())]
    value_map = {i: i for i in range(len(CLASSES))}
    value_map[IGNORE_INDEX] = VOID.id if void_class else IGNORE_INDEX
    void_note = (
        "raw 255 (void) -> class 7 'void' (--void-class)"
        if void_class
        else "raw 255 (void) kept as ignore; --void-class makes it a class"
    )
    return DatasetPlan(
        name="idd-lite",
        classes=CLASSES + [VOID] if void_class else list(CLASSES),
        samples=samples,
        read_mask=read_mask,
        value_map=value_map,
        notes=["labels 0..6 are the IDD level-1 classes", void_note],
        unpaired_images=unpaired_images,
        unpaired_masks=unpaired_masks,
        stray_to_ignore=ignore_stray_values,
    )


def _find_root(raw: Path) -> Path:
    """The folder holding leftImg8bit and gtFine: RAW itself or RAW/idd20k_lite."""
    for candidate in (raw, raw / "idd20k_lite"):
        if (candidate / "leftImg8bit").is_dir():
            if not (candidate / "gtFine").is_dir():
                raise DataError(
                    f"IDD-Lite folder {candidate} has no gtFine folder", hint=LAYOUT_HINT
                )
            return candidate
    raise DataError(f"{raw} is not an IDD-Lite folder (no leftImg8bit)", hint=LAYOUT_HINT)


def _by_key(folder: Path, ending: str) -> dict[str, Path]:
    """Files `<seq>/<name><ending>` keyed `<seq>_<name>` (names repeat across sequences)."""
    if not folder.is_dir():
        return {}
    return {
        f"{path.parent.name}_{path.name[: -len(ending)]}": path
        for path in folder.glob(f"*/*{ending}")
    }


def read_mask(sample: Sample) -> np.ndarray:
    return read_label_values(sample.mask)
