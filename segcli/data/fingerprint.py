"""A prepared dataset's fingerprint: the numbers the planner chooses a training from.

`segcli prepare` writes it as `fingerprint.json` next to `dataset.json`
(docs/dataset-format.md); a dataset prepared before fingerprints existed gets it computed
on first use. No torch here: the planner and `--print-config` stay light.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class SizeStats:
    """Median, smallest and largest value of one image side, in pixels."""

    median: float
    min: int
    max: int


@dataclass(frozen=True)
class ClassStats:
    """How much of the training data one class covers, and how large its objects are."""

    index: int
    name: str
    # share of all labelled (not ignored) training pixels
    pixel_share: float
    # share of training images with at least one pixel of the class
    image_share: float
    # median connected-component area as a fraction of its image's area; None if absent
    median_object_area: float | None
    # share of the class's pixels in the top half / the left half of their images; 0.5 is
    # symmetric. None if absent. Tells orientation-free data (microscopy) from data with an
    # up and a down (seismic, street scenes).
    top_share: float | None
    left_share: float | None


@dataclass(frozen=True)
class Fingerprint:
    version: int
    # images per split, labelled or not
    splits: dict[str, int]
    height: SizeStats
    width: SizeStats
    channels: int
    # per-channel intensity of the training images, scaled to 0..1
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[ClassStats, ...]
    # how many training images the statistics above were measured on (a sample of large sets)
    images_measured: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            version=int(data["version"]),
            splits={str(k): int(v) for k, v in data["splits"].items()},
            height=SizeStats(**data["height"]),
            width=SizeStats(**data["width"]),
            channels=int(data["channels"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            classes=tuple(ClassStats(**c) for c in data["classes"]),
            images_measured=int(data["images_measured"]),
        )
