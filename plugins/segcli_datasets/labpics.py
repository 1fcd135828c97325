"""`labpics`: LabPics V1 (chemistry lab photos), vessels and their filled parts.

Each image has up to two binary masks (pixel value 1 = member): `Semantic/1_Vessel` and
`Semantic/16_Filled`. A missing mask file means "no pixels of that class", not an error.
Filled wins where both are set.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import IGNORE_INDEX, ClassInfo, DataError, DatasetPlan, Sample, image_size

from .common import STRAY_HELP, image_files, split_note, split_off_validation
from .encodings import read_label_values

CLASSES = [
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "vessel", (0, 130, 200)),
    ClassInfo(2, "filled", (230, 25, 75)),
]
MASK_FOLDERS = ("1_Vessel", "16_Filled")
SPLITS = {"Train": "train", "Test": "test"}
# Raw code of a pixel = vessel + 2 * filled, so the report shows both masks' contributions.
VALUE_MAP = {0: 0, 1: 1, 2: 2, 3: 2}
LAYOUT_HINT = "expected Simple/Train and Simple/Test, each with Image/ and Semantic/1_Vessel/"


def prepare(
    raw: Path | None,
    *,
    val_fraction: Annotated[float, "share of Train held out for validation (seeded)"] = 0.1,
    seed: Annotated[int, "seed of the validation split"] = 0,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """LabPics V1: background 0, vessel 1, filled 2 (Simple/Train -> train + val, Test -> test)."""
    root = _find_root(Path(raw))
    samples: list[Sample] = []
    unpaired_masks: list[str] = []
    missing = dict.fromkeys(MASK_FOLDERS, 0)
    for folder, split in SPLITS.items():
        if not (root / folder / "Image").is_dir():
            continue
        images = {p.stem: p for p in image_files(root / folder / "Image")}
        semantic = root / folder / "Semantic"
        for stem, image in sorted(images.items()):
            masks = tuple(semantic / name / f"{stem}.png" for name in MASK_FOLDERS)
            for name, mask in zip(MASK_FOLDERS, masks, strict=True):
                missing[name] += not mask.is_file()
            present = tuple(m if m.is_file() else None for m in masks)
            samples.append(Sample(split, stem, image, present))
        for name in MASK_FOLDERS:
            if (semantic / name).is_dir():
                lonely = [p for p in image_files(semantic / name) if p.stem not in images]
                unpaired_masks += [str(p) for p in lonely]
    if not samples:
        raise DataError(f"{root} has no Train/Image or Test/Image folder", hint=LAYOUT_HINT)
    split_off_validation(samples, val_fraction, seed)
    notes = [
        "labels: 1_Vessel -> vessel (1), 16_Filled -> filled (2), filled wins; value 1 = member"
    ]
    notes += [
        f"{count} images have no {name} mask: no {name.split('_')[1].lower()} pixels there"
        for name, count in missing.items()
        if count
    ]
    notes.append(split_note(samples, val_fraction, seed))
    return DatasetPlan(
        name="labpics",
        classes=CLASSES,
        samples=samples,
        read_mask=partial(read_mask, stray_to_ignore=ignore_stray_values),
        value_map=VALUE_MAP,
        notes=notes,
        unpaired_masks=unpaired_masks,
        stray_to_ignore=ignore_stray_values,
    )


def _find_root(raw: Path) -> Path:
    """The folder holding Train/ and Test/: RAW/Simple or RAW itself."""
    for candidate in (raw / "Simple", raw):
        if any((candidate / folder).is_dir() for folder in SPLITS):
            return candidate
    raise DataError(f"{raw} is not a LabPics V1 folder (no Simple/Train)", hint=LAYOUT_HINT)


def read_mask(sample: Sample, stray_to_ignore: bool = False) -> np.ndarray:
    width, height = image_size(sample.image)
    code = np.zeros((height, width), dtype=np.uint8)
    stray = np.zeros((height, width), dtype=bool)
    for weight, path in zip((1, 2), sample.mask, strict=True):
        if path is None:
            continue
        values = read_label_values(path)
        if values.shape != code.shape:
            raise DataError(
                f"{path}: mask is {values.shape[1]}x{values.shape[0]} but its image "
                f"{sample.image} is {width}x{height}"
            )
        member = values == 1
        stray |= (values != 0) & ~member
        code += weight * member.astype(np.uint8)
    if stray.any():
        if not stray_to_ignore:
            found = sorted(
                {
                    int(v)
                    for p in sample.mask
                    if p is not None
                    for v in np.unique(read_label_values(p))
                    if v not in (0, 1)
                }
            )
            raise DataError(
                f"LabPics mask of {sample.stem} holds values {found[:8]}; masks must be 0/1 "
                f"(1 = member) ({sample.mask[0] or sample.mask[1]})",
                hint="pass --ignore-stray-values to ignore those pixels",
            )
        code[stray] = IGNORE_INDEX
    return code
