"""`isbi2012`: ISBI 2012 EM membrane segmentation, as TIFF volumes or as the common PNG layout.

Labels are two-level: membrane is the dark level (0), cell interior the bright one (255).
They are mapped explicitly to membrane 0, cell 1 (dividing by 255, as several tutorials do,
only works for exact 0/255 and hides anything else).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import ClassInfo, DataError, DatasetPlan, Sample, decode_image, open_image, page_count

from .common import (
    STRAY_HELP,
    image_files,
    sorted_naturally,
    split_note,
    split_off_validation,
)
from .encodings import read_label_values

CLASSES = [ClassInfo(0, "membrane", (0, 0, 0)), ClassInfo(1, "cell", (255, 255, 255))]
VOLUMES = ("train-volume.tif", "train-labels.tif", "test-volume.tif")
LAYOUT_HINT = (
    "expected train-volume.tif + train-labels.tif [+ test-volume.tif], or "
    "train/image/N.png + train/label/N.png [+ test/N.png]"
)


def prepare(
    raw: Path | None,
    *,
    val_fraction: Annotated[float, "share of train held out for validation (seeded)"] = 0.1,
    seed: Annotated[int, "seed of the validation split"] = 0,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """ISBI 2012 EM membranes (30 train slices of 512x512): membrane 0, cell 1."""
    raw = Path(raw)
    if (raw / VOLUMES[0]).is_file():
        samples, label_files, layout = _volume_samples(raw), [raw / VOLUMES[1]], "TIFF volumes"
        read_mask, read_image = read_volume_mask, read_volume_image
    elif (raw / "train" / "image").is_dir():
        samples, layout = _png_samples(raw), "PNG layout"
        label_files = [s.mask for s in samples if s.mask is not None]
        read_mask, read_image = read_png_mask, None
    else:
        raise DataError(f"{raw} is not an ISBI 2012 folder", hint=LAYOUT_HINT)
    low, high = _label_levels(label_files, read_mask, samples)
    split_off_validation(samples, val_fraction, seed)
    return DatasetPlan(
        name="isbi2012",
        classes=CLASSES,
        samples=samples,
        read_mask=read_mask,
        read_image=read_image,
        value_map={low: 0, high: 1},
        image_channels=1,
        notes=[
            f"read the {layout}",
            f"labels: raw {low} -> membrane (0), raw {high} -> cell (1); any other value is "
            "reported",
            split_note(samples, val_fraction, seed),
        ],
        stray_to_ignore=ignore_stray_values,
    )


def _png_samples(raw: Path) -> list[Sample]:
    labels = raw / "train" / "label"
    if not labels.is_dir():
        raise DataError(f"ISBI PNG layout without a label folder {labels}", hint=LAYOUT_HINT)
    samples = [
        Sample("train", image.stem, image, labels / f"{image.stem}.png")
        for image in sorted_naturally(image_files(raw / "train" / "image"))
    ]
    if (raw / "test").is_dir():
        samples += [Sample("test", p.stem, p) for p in sorted_naturally(image_files(raw / "test"))]
    return samples


def _volume_samples(raw: Path) -> list[Sample]:
    train, labels, test = (raw / name for name in VOLUMES)
    if not labels.is_file():
        raise DataError(f"{train} has no label volume beside it ({labels})", hint=LAYOUT_HINT)
    pages, label_pages = page_count(train), page_count(labels)
    if pages != label_pages:
        raise DataError(
            f"{train} has {pages} slices but {labels} has {label_pages}",
            hint="the two volumes must come from the same release",
        )
    samples = [
        Sample("train", f"{i:02d}", None, (labels, i), {"volume": str(train), "page": i})
        for i in range(pages)
    ]
    if test.is_file():
        samples += [
            Sample("test", f"{i:02d}", None, None, {"volume": str(test), "page": i})
            for i in range(page_count(test))
        ]
    return samples


def _label_levels(label_files, read_mask, samples) -> tuple[int, int]:
    """The two label levels, from the first label (the pipeline checks every other one)."""
    first = next(s for s in samples if s.mask is not None)
    values = np.unique(read_mask(first)).tolist()
    if len(values) != 2:
        raise DataError(
            f"ISBI label {label_files[0]} holds {len(values)} values {values[:8]}, expected two "
            "(membrane and cell)",
            hint="use the original labels (0 = membrane, 255 = cell)",
        )
    return values[0], values[1]


def read_png_mask(sample: Sample) -> np.ndarray:
    return read_label_values(sample.mask)


def read_volume_mask(sample: Sample) -> np.ndarray:
    """A label slice's stored values (8- or 16-bit levels; other modes as grey)."""
    volume, page = sample.mask
    label = open_image(volume, page=page)
    return np.asarray(label if label.mode in ("L", "I;16") else label.convert("L"))


def read_volume_image(sample: Sample) -> np.ndarray:
    """An image slice, 8-bit grey by segcli's one rule for bit depths."""
    return np.asarray(decode_image(Path(sample.meta["volume"]), mode="L", page=sample.meta["page"]))
