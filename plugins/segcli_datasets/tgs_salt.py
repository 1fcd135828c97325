"""`tgs-salt`: the TGS Salt Identification Challenge (Kaggle layout).

Masks come from `train/masks/<id>.png` (8-bit 0/255 or 16-bit 0/65535; salt = the bright
level) or from the run-length column of `train.csv`. Depths from `depths.csv` are kept as
per-sample metadata.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import ClassInfo, DataError, DatasetPlan, Sample, UsageError, image_size

from .common import STRAY_HELP, image_files, split_note, split_off_validation
from .encodings import read_label_values

CLASSES = [ClassInfo(0, "sediment", (0, 0, 0)), ClassInfo(1, "salt", (255, 255, 255))]
# Salt is stored at full scale: 255 in 8-bit masks, 65535 in 16-bit ones, 1 in decoded RLE.
VALUE_MAP = {0: 0, 1: 1, 255: 1, 65535: 1}
MASK_SOURCES = ("auto", "png", "rle")
LAYOUT_HINT = "expected train/images/<id>.png with train/masks/<id>.png or train.csv"


def prepare(
    raw: Path | None,
    *,
    mask_source: Annotated[
        str,
        "where masks come from: auto (PNGs if present), png, or rle "
        "(the run-length masks of train.csv)",
    ] = "auto",
    val_fraction: Annotated[float, "share of train held out for validation (seeded)"] = 0.15,
    seed: Annotated[int, "seed of the validation split"] = 0,
    include_test: Annotated[bool, "also copy the unlabelled test images"] = True,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """TGS Salt (Kaggle): 101x101 seismic tiles, sediment 0 / salt 1, depth per image."""
    raw = Path(raw)
    if mask_source not in MASK_SOURCES:
        raise UsageError(f"unknown --mask-source {mask_source!r}", hint="use auto, png or rle")
    images_dir, masks_dir = raw / "train" / "images", raw / "train" / "masks"
    table = raw / "train.csv"
    if not images_dir.is_dir():
        raise DataError(
            f"{raw} is not a TGS Salt folder: {images_dir} is missing", hint=LAYOUT_HINT
        )
    if mask_source == "auto":
        mask_source = "png" if masks_dir.is_dir() else "rle"
    rles = _read_rles(table) if table.is_file() else None
    images = {p.stem: p for p in image_files(images_dir)}
    notes = []
    if mask_source == "png":
        if not masks_dir.is_dir():
            raise DataError(
                f"mask folder {masks_dir} does not exist",
                hint="pass --mask-source rle to use train.csv",
            )
        masks = {p.stem: p for p in image_files(masks_dir)}
        read_mask = read_png_mask
        notes.append("masks read from train/masks (8-bit 0/255 and 16-bit 0/65535, salt = bright)")
    else:
        if rles is None:
            raise DataError(f"--mask-source rle, but {table} does not exist", hint=LAYOUT_HINT)
        masks = {stem: (table, stem) for stem in rles}
        read_mask = partial(read_rle_mask, rles=rles)
        notes.append("masks decoded from the run-length column of train.csv")
    depths = _read_depths(raw / "depths.csv")
    samples = [
        Sample("train", stem, images[stem], masks[stem], _depth(depths, stem))
        for stem in sorted(images.keys() & masks.keys())
    ]
    if rles is not None:
        empty = sum(1 for stem, rle in rles.items() if stem in masks and not rle.strip())
        notes.append(f"empty masks (no salt, per train.csv): {empty} of {len(samples)}")
    split_off_validation(samples, val_fraction, seed)
    notes.append(split_note(samples, val_fraction, seed))
    test_dir = raw / "test" / "images"
    if include_test and test_dir.is_dir():
        samples += [
            Sample("test", p.stem, p, None, _depth(depths, p.stem)) for p in image_files(test_dir)
        ]
    if depths:
        missing = sum("depth" not in s.meta for s in samples)
        notes.append(
            "depths from depths.csv kept as metadata"
            + (f" ({missing} images have none)" if missing else "")
        )
    return DatasetPlan(
        name="tgs-salt",
        classes=CLASSES,
        samples=samples,
        read_mask=read_mask,
        value_map=VALUE_MAP,
        image_channels=1,
        notes=notes,
        unpaired_images=[str(images[s]) for s in sorted(images.keys() - masks.keys())],
        unpaired_masks=[str(_where(masks[s])) for s in sorted(masks.keys() - images.keys())],
        stray_to_ignore=ignore_stray_values,
    )


def _where(mask) -> str:
    return f"{mask[0]} row {mask[1]}" if isinstance(mask, tuple) else str(mask)


def _depth(depths: dict[str, int], stem: str) -> dict[str, int]:
    return {"depth": depths[stem]} if stem in depths else {}


def _read_rles(path: Path) -> dict[str, str]:
    rows = _read_csv(path, ("id", "rle_mask"))
    return {row["id"]: row["rle_mask"] or "" for row in rows}


def _read_depths(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    depths = {}
    for row in _read_csv(path, ("id", "z")):
        try:
            depths[row["id"]] = int(float(row["z"]))
        except (TypeError, ValueError):
            raise DataError(f"{path}: depth {row['z']!r} of {row['id']} is not a number") from None
    return depths


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
            raise DataError(
                f"{path} has columns {reader.fieldnames}, expected {', '.join(columns)}",
                hint="use the file from the Kaggle download",
            )
        return list(reader)


def read_png_mask(sample: Sample) -> np.ndarray:
    return read_label_values(sample.mask)


def read_rle_mask(sample: Sample, rles: dict[str, str]) -> np.ndarray:
    """Decode Kaggle's run-length encoding: 1-based `start length` pairs, column-major."""
    width, height = image_size(sample.image)
    table, stem = sample.mask
    return decode_rle(rles[stem], height, width, f"{table} row {stem}")


def decode_rle(rle: str, height: int, width: int, where: str = "run-length mask") -> np.ndarray:
    flat = np.zeros(height * width, dtype=np.uint8)
    try:
        numbers = np.array(rle.split(), dtype=np.int64)
    except ValueError:
        raise DataError(f"{where}: run-length mask has a non-number") from None
    if len(numbers) % 2:
        raise DataError(f"{where}: run-length mask has an odd count of numbers")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if len(starts) and (
        starts.min() < 0 or lengths.min() < 0 or (starts + lengths).max() > flat.size
    ):
        raise DataError(f"{where}: a run falls outside the {width}x{height} image")
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        flat[start : start + length] = 1
    return flat.reshape((height, width), order="F")
