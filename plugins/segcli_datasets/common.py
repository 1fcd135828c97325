"""Helpers shared by the built-in preparers: listing files, validation splits, class colours."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from segcli import IMAGE_SUFFIXES, ClassInfo, DataError, Sample, UsageError

STRAY_HELP = "map mask values that are not in the class map to ignore (255) instead of failing"


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (by suffix, case-insensitive), sorted, hidden files left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def require_dir(path: Path, what: str, hint: str) -> Path:
    """`path` if it is a folder, else a DataError naming the folder the layout needs."""
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist", hint=hint)
    return path


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(
            f"--val-fraction must be at least 0 and below 1, got {val_fraction}",
            hint="e.g. --val-fraction 0.15",
        )


def held_out(stems: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """The stems moved to validation: a seeded choice that does not depend on listing order."""
    check_val_fraction(val_fraction)
    ordered = sorted(stems)
    if val_fraction == 0 or len(ordered) < 2:
        return set()
    count = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    picked = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return {ordered[i] for i in picked}


def split_off_validation(
    samples: list[Sample], val_fraction: float, seed: int, source: str = "train"
) -> list[Sample]:
    """Move a seeded `val_fraction` of the `source` split's labelled samples to `val`."""
    chosen = held_out(
        (s.stem for s in samples if s.split == source and s.mask is not None), val_fraction, seed
    )
    for sample in samples:
        if sample.split == source and sample.stem in chosen:
            sample.split = "val"
    return samples


def split_note(samples: list[Sample], val_fraction: float, seed: int) -> str:
    val = sum(s.split == "val" for s in samples)
    return f"validation split: {val} samples ({val_fraction:.0%} of train, seed {seed})"


def distinct_colors(count: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: distinct, stable colours for class ids 0..count-1."""
    colors = []
    for index in range(count):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors.append((r, g, b))
    return colors


def make_classes(names: list[str]) -> list[ClassInfo]:
    return [
        ClassInfo(i, name, color)
        for i, (name, color) in enumerate(zip(names, distinct_colors(len(names)), strict=True))
    ]


def sorted_naturally(paths: Iterable[Path]) -> list[Path]:
    """Sort so that `2.png` comes before `10.png` (ISBI's unpadded slice numbers)."""

    def key(path: Path) -> tuple:
        return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)

    return sorted(paths, key=key)
