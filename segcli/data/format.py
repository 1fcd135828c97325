"""The canonical prepared dataset: what every preparer writes and every trainer reads.

Layout (see docs/dataset-format.md)::

    <out>/dataset.json               DatasetInfo below
    <out>/report.json                what the preparer found (pairs, value sets, problems)
    <out>/samples.jsonl              one line per sample: split, stem, files, sources, metadata
    <out>/<split>/images/<stem>.<ext>
    <out>/<split>/masks/<stem>.png   single-channel uint8: 0..C-1, 255 = ignore
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segcli.errors import DataError, SegcliError, UsageError, shortened
from segcli.json_files import read_json

FORMAT_VERSION = 1
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
# A split is a folder beside dataset.json: letters, digits, '-' and '_' only, so that no split
# is named like a file segcli keeps there (dataset.json, fingerprint.json, ...), hidden, or
# a path.
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_split_name(name: Any, where: str, error: type[SegcliError] = UsageError) -> None:
    """Refuse a split name that is not a safe folder name (`SPLIT_NAME`), naming `where`."""
    if not (isinstance(name, str) and SPLIT_NAME.fullmatch(name)):
        raise error(
            f"{where}: {name!r} cannot be a split name",
            hint="a split is a folder: use letters, digits, '-' and '_' (at most 64), "
            "e.g. train, val, test",
        )


@dataclass(frozen=True)
class ClassInfo:
    """One class of a dataset: its index in the masks, a name and a display colour."""

    id: int
    name: str
    color: tuple[int, int, int]


@dataclass
class DatasetInfo:
    """The contents of dataset.json."""

    name: str
    classes: list[ClassInfo]
    splits: dict[str, int]
    image_channels: int = 3
    ignore_index: int = IGNORE_INDEX
    labelled_splits: list[str] = field(default_factory=list)
    # masks per labelled split: a labelled split may also hold images without one
    masks: dict[str, int] = field(default_factory=dict)
    class_pixels: dict[str, list[int]] = field(default_factory=dict)
    ignore_pixels: dict[str, int] = field(default_factory=dict)
    preparer: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [tuple(c.color) for c in self.classes]

    def to_json(self) -> str:
        data = asdict(self)
        data["classes"] = [
            {"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes
        ]
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        data = dict(data)
        data["classes"] = [
            ClassInfo(int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"]))
            for c in data["classes"]
        ]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_dataset_info(root: Path) -> DatasetInfo:
    """Read `<root>/dataset.json`, with an error that says how to make one when it is missing."""
    path = Path(root) / "dataset.json"
    if not Path(root).is_dir():
        raise DataError(
            f"prepared dataset folder {root} does not exist",
            hint="run `segcli prepare <dataset> ...` first, or pass the folder it wrote",
        )
    if not path.is_file():
        raise DataError(
            f"{root} is not a prepared dataset: it has no dataset.json",
            hint="`segcli prepare` writes one; raw folders must be prepared first",
        )
    data = read_json(path, hint=_REWRITE)
    _check_fields(path, data)
    info = DatasetInfo.from_dict(data)
    if info.format_version > FORMAT_VERSION:
        raise DataError(
            f"{path} has format version {info.format_version}; this segcli reads up to "
            f"{FORMAT_VERSION}",
            hint="upgrade segcli",
        )
    return info


_REWRITE = "correct it, or write the dataset again with `segcli prepare ... --force`"


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_name_map(value: Any, holds: Callable[[Any], bool]) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and holds(v) for k, v in value.items()
    )


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


# key -> (check, what a valid value is); the first three keys are required
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "classes": (lambda v: isinstance(v, list) and bool(v), "a non-empty list of classes"),
    "splits": (lambda v: _is_name_map(v, _is_int), "an object of split name -> image count"),
    "image_channels": (lambda v: _is_int(v) and v in (1, 3), "1 or 3"),
    "ignore_index": (lambda v: _is_int(v) and 0 <= v <= 255, "an integer 0-255"),
    "labelled_splits": (
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "a list of split names",
    ),
    "masks": (lambda v: _is_name_map(v, _is_int), "an object of split name -> mask count"),
    "class_pixels": (lambda v: _is_name_map(v, _is_int_list), "split name -> pixel counts"),
    "ignore_pixels": (lambda v: _is_name_map(v, _is_int), "split name -> pixel count"),
    "preparer": (lambda v: isinstance(v, dict), "an object"),
    "format_version": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}
_REQUIRED = ("name", "classes", "splits")


def _check_fields(path: Path, data: Any) -> None:
    """Every field of dataset.json, checked before anything (a model, a run) is built from it."""
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object", hint=_REWRITE)
    for key in _REQUIRED:
        if key not in data:
            raise DataError(f"{path} has no {key!r}", hint=_REWRITE)
    for key, (valid, expected) in _FIELDS.items():
        if key in data and not valid(data[key]):
            raise DataError(
                f"{path}: {key!r} must be {expected}, not {json.dumps(data[key])[:60]}",
                hint=_REWRITE,
            )
    for split in data["splits"]:
        check_split_name(split, str(path), DataError)
    for index, entry in enumerate(data["classes"]):
        color = entry.get("color") if isinstance(entry, dict) else None
        if not (
            isinstance(entry, dict)
            and entry.get("id") == index
            and _is_int(entry.get("id"))
            and isinstance(entry.get("name"), str)
            and isinstance(color, list)
            and len(color) == 3
            and all(_is_int(v) and 0 <= v <= 255 for v in color)
        ):
            raise DataError(
                f"{path}: classes[{index}] must be "
                f'{{"id": {index}, "name": "...", "color": [r, g, b]}}, '
                f"not {json.dumps(entry)[:60]}",
                hint=_REWRITE,
            )


def check_mask_values(root: Path, split: str, info: DatasetInfo) -> None:
    """Refuse a split whose masks, as recorded when it was prepared, hold class values that
    dataset.json does not list: training would fail on them mid-epoch."""
    recorded = {index for index, count in enumerate(info.class_pixels.get(split, [])) if count}
    report = Path(root) / "report.json"
    if report.is_file():
        try:
            mapped = read_json(report).get("mapped_values", {}).get(split, [])
        except (DataError, AttributeError):
            mapped = []  # the report is informative only; the dataset guards each mask too
        if isinstance(mapped, list):
            recorded |= {value for value in mapped if isinstance(value, int)}
    undeclared = undeclared_values(sorted(recorded), info)
    if undeclared:
        raise DataError(
            f"the {split} masks of {root} hold value(s) {undeclared[:8]}, but its dataset.json "
            f"lists {describe_classes(info)}",
            hint="add the missing classes to dataset.json, or write the dataset again with "
            "`segcli prepare ... --force`",
        )


def undeclared_values(values: Any, info: DatasetInfo) -> list[int]:
    """The values in `values` (a mask, or a list) that are neither a class id nor ignore."""
    values = np.asarray(values)
    stray = (values >= info.num_classes) & (values != info.ignore_index)
    return [int(v) for v in np.unique(values[stray])] if stray.any() else []


def describe_classes(info: DatasetInfo) -> str:
    return f"{info.num_classes} classes (0-{info.num_classes - 1}; {info.ignore_index} = ignore)"


def split_files(
    root: Path, split: str, info: DatasetInfo | None = None
) -> list[tuple[Path, Path | None]]:
    """(image, mask or None) pairs of a split, sorted by stem; the files must still be the
    ones dataset.json counted (`info`, read from `root` when not given)."""
    images_dir = Path(root) / split / "images"
    if not images_dir.is_dir():
        raise DataError(f"split {split!r} does not exist in {root}", hint="see dataset.json")
    masks_dir = Path(root) / split / "masks"
    pairs = []
    for image in sorted(images_dir.iterdir()):
        mask = masks_dir / f"{image.stem}.png"
        pairs.append((image, mask if mask.is_file() else None))
    check_split_files(root, split, pairs, info or read_dataset_info(root))
    return pairs


def check_split_files(
    root: Path, split: str, pairs: list[tuple[Path, Path | None]], info: DatasetInfo
) -> None:
    """Refuse a split whose files no longer match dataset.json: training or scoring on what
    is left of it (images or masks deleted or added since `segcli prepare`) would give
    results that silently differ from the dataset's."""
    recorded = info.splits.get(split)
    if recorded is None:  # a split dataset.json does not count (a hand-made dataset)
        return
    unmasked = [image.name for image, mask in pairs if mask is None]
    labelled = split in info.labelled_splits
    # datasets prepared before `masks` was recorded: every image of a labelled split had one
    masks = info.masks.get(split, recorded if labelled else 0)
    if len(pairs) == recorded and len(pairs) - len(unmasked) == masks:
        return
    found = f"{len(pairs)} image(s)"
    if labelled:
        found += f" and {len(pairs) - len(unmasked)} mask(s)"
        if unmasked:
            found += f" ({shortened(unmasked)} without one)"
    raise DataError(
        f"split {split!r} of {root} holds {found}, but its dataset.json records {recorded} "
        f"image(s){f' and {masks} mask(s)' if labelled else ''}: files were deleted or added "
        "since it was prepared",
        hint="restore them, or prepare the dataset again with `segcli prepare ... --force`",
    )
