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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segcli.errors import DataError

FORMAT_VERSION = 1
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")


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
    try:
        info = DatasetInfo.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a valid dataset.json: {exc}") from exc
    if info.format_version > FORMAT_VERSION:
        raise DataError(
            f"{path} has format version {info.format_version}; this segcli reads up to "
            f"{FORMAT_VERSION}",
            hint="upgrade segcli",
        )
    return info


def split_files(root: Path, split: str) -> list[tuple[Path, Path | None]]:
    """(image, mask or None) pairs of a split, sorted by stem."""
    images_dir = Path(root) / split / "images"
    if not images_dir.is_dir():
        raise DataError(f"split {split!r} does not exist in {root}", hint="see dataset.json")
    masks_dir = Path(root) / split / "masks"
    pairs = []
    for image in sorted(images_dir.iterdir()):
        mask = masks_dir / f"{image.stem}.png"
        pairs.append((image, mask if mask.is_file() else None))
    return pairs
