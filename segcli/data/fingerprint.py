"""A prepared dataset's fingerprint: the numbers the planner chooses a training from.

`segcli prepare` writes it as `fingerprint.json` next to `dataset.json`
(docs/dataset-format.md); a dataset prepared before fingerprints existed gets it computed
on first use. No torch here: the planner and `--print-config` stay light.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcli.data.format import DatasetInfo, read_dataset_info, split_files
from segcli.data.images import read_image, read_mask
from segcli.errors import DataError, OutputError, ResourceError
from segcli.files import atomic_write
from segcli.json_files import read_json
from segcli.ledger import OutputLedger

FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_VERSION = 2  # 2: per-class thickness
_READ_AHEAD = 64  # images decoded ahead of the tally


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
    # the area of the component that the class's median pixel lies in (an area-weighted
    # median, as a fraction of the image): the size of the objects most of the class is made
    # of, which specks of label noise barely move (they can dominate median_object_area).
    # None if absent.
    pixel_weighted_object_area: float | None = None
    # 2 x pixels / boundary pixels, in pixels of the image: the width of a band-shaped class
    # (membranes, vessels), the radius of a blob-shaped one. What downscaling must keep above
    # a few pixels. None if absent.
    thickness: float | None = None


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

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

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


def compute_fingerprint(
    root: Path, info: DatasetInfo | None = None, *, max_images: int = 2000
) -> Fingerprint:
    """Measure the prepared dataset at `root`: its training split (`train`, else the first
    labelled split), or an evenly spaced sample of `max_images` of its images, read with the
    trainer's own readers (so sizes are after EXIF rotation, channels as the model gets them).
    """
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, not {max_images}")
    root = Path(root)
    info = info or read_dataset_info(root)
    split = _training_split(root, info)
    pairs = split_files(root, split)
    if not pairs:
        raise DataError(
            f"split {split!r} of {root} has no images to measure",
            hint="write the dataset again with `segcli prepare ... --force`",
        )
    count = min(max_images, len(pairs))
    sample = [pairs[index * len(pairs) // count] for index in range(count)]

    def decoded(pair: tuple[Path, Path | None]) -> tuple[np.ndarray, np.ndarray | None]:
        image_path, mask_path = pair
        mask = read_mask(mask_path) if mask_path is not None else None
        return read_image(image_path, info.image_channels), mask

    tally = _Tally(info.image_channels, info.num_classes)
    # decoding releases the GIL: threads read ahead while the tally counts, in sample order,
    # a bounded chunk at a time so that decoded images do not pile up
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, count, _READ_AHEAD):
            for image, mask in pool.map(decoded, sample[start : start + _READ_AHEAD]):
                tally.add(image, mask)
    return tally.fingerprint(info)


def load_fingerprint(root: Path) -> Fingerprint:
    """The fingerprint of the prepared dataset at `root`.

    `fingerprint.json` is derived data: when it is missing, unreadable, of another version
    or of other split sizes (a dataset prepared before fingerprints existed, or edited since),
    the fingerprint is computed and written back atomically. A dataset folder that cannot be
    written (read-only, disk full) gets it computed on every use instead of an error; one
    written by a newer segcli is left as it is."""
    root = Path(root)
    info = read_dataset_info(root)
    path = root / FINGERPRINT_FILE
    recorded = _read_recorded(path)
    if isinstance(recorded, Fingerprint) and recorded.splits == info.splits:
        return recorded
    fingerprint = compute_fingerprint(root, info)
    if not (isinstance(recorded, int) and recorded > FINGERPRINT_VERSION):
        _store(root, path, fingerprint)
    return fingerprint


def _read_recorded(path: Path) -> Fingerprint | int | None:
    """The recorded fingerprint of this version, else the version number found (or None)."""
    try:
        data = read_json(path)
    except DataError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    if type(version) is not int:
        return None
    if version != FINGERPRINT_VERSION:
        return version
    try:
        return Fingerprint.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _store(root: Path, path: Path, fingerprint: Fingerprint) -> None:
    try:
        ledger = OutputLedger(root) if (root / OutputLedger.NAME).is_file() else None
        with atomic_write(path, ledger=ledger) as stream:
            stream.write(fingerprint.to_json().encode())
    except (OutputError, ResourceError):
        pass  # derived data: measured again next time rather than failing the command


def _training_split(root: Path, info: DatasetInfo) -> str:
    if "train" in info.splits:
        return "train"
    candidates = [s for s in info.labelled_splits if s in info.splits] or list(info.splits)
    if not candidates:
        raise DataError(f"{root}/dataset.json lists no splits", hint="prepare the dataset again")
    return candidates[0]


class _Tally:
    """Running sums over the measured images; masks are optional (unlabelled images)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        self.channels, self.num_classes = channels, num_classes
        self.heights: list[int] = []
        self.widths: list[int] = []
        self.intensity = np.zeros((channels, 256), np.int64)
        self.pixels = np.zeros(256, np.int64)
        self.top = np.zeros(256, np.float64)
        self.left = np.zeros(256, np.float64)
        self.images_with = np.zeros(256, np.int64)
        self.masks = 0
        self.object_areas: list[list[float]] = [[] for _ in range(num_classes)]
        self.boundary = np.zeros(256, np.int64)

    def add(self, image: np.ndarray, mask: np.ndarray | None) -> None:
        import cv2  # here, not at the top: 0.1 s that reading a fingerprint does not need

        self.heights.append(image.shape[0])
        self.widths.append(image.shape[1])
        for channel in range(self.channels):
            self.intensity[channel] += _histogram(image, channel)
        if mask is None:
            return
        self.masks += 1
        counts = _histogram(mask)
        self.pixels += counts
        self.top += _first_half_counts(mask, axis=0)
        self.left += _first_half_counts(mask, axis=1)
        present = np.flatnonzero(counts[: self.num_classes])
        self.images_with[present] += 1
        self.boundary += np.bincount(mask[_boundary(mask)], minlength=256)[:256]
        for index in present:
            # labels counted by numpy: 3 times faster than connectedComponentsWithStats
            count, labels = cv2.connectedComponents((mask == index).view(np.uint8), connectivity=8)
            areas = np.bincount(labels.ravel(), minlength=count)[1:] / mask.size
            self.object_areas[index].extend(areas.tolist())

    def fingerprint(self, info: DatasetInfo) -> Fingerprint:
        levels = np.arange(256) / 255.0
        totals = self.intensity.sum(axis=1)
        mean = self.intensity @ levels / totals
        variance = np.maximum(self.intensity @ levels**2 / totals - mean**2, 0.0)
        labelled = int(self.pixels[: self.num_classes].sum())
        classes = []
        for cls in info.classes:
            pixels = int(self.pixels[cls.id])
            areas = self.object_areas[cls.id]
            classes.append(
                ClassStats(
                    index=cls.id,
                    name=cls.name,
                    pixel_share=_round(pixels / labelled) if labelled else 0.0,
                    image_share=_round(self.images_with[cls.id] / self.masks)
                    if self.masks
                    else 0.0,
                    median_object_area=_round(float(np.median(areas))) if areas else None,
                    top_share=_round(self.top[cls.id] / pixels) if pixels else None,
                    left_share=_round(self.left[cls.id] / pixels) if pixels else None,
                    pixel_weighted_object_area=_weighted_median(areas) if areas else None,
                    thickness=_round(2 * pixels / max(1, int(self.boundary[cls.id])))
                    if pixels
                    else None,
                )
            )
        return Fingerprint(
            version=FINGERPRINT_VERSION,
            splits=dict(info.splits),
            height=_size_stats(self.heights),
            width=_size_stats(self.widths),
            channels=self.channels,
            mean=tuple(_round(v) for v in mean),
            std=tuple(_round(v) for v in np.sqrt(variance)),
            classes=tuple(classes),
            images_measured=len(self.heights),
        )


def _histogram(array: np.ndarray, channel: int = 0) -> np.ndarray:
    """Pixels per value 0..255 of one channel of a uint8 array (cv2: 4 times numpy's speed)."""
    import cv2

    if array.size == 0:
        return np.zeros(256, np.int64)
    counts = cv2.calcHist([array], [channel], None, [256], [0, 256])
    return counts.ravel().round().astype(np.int64)


def _first_half_counts(mask: np.ndarray, axis: int) -> np.ndarray:
    """Pixels per value in the first half of the rows (axis 0) or columns (axis 1); a middle
    row or column counts half."""
    half, odd = divmod(mask.shape[axis], 2)
    first = mask[:half] if axis == 0 else mask[:, :half]
    counts = _histogram(first).astype(np.float64)
    if odd:
        middle = mask[half : half + 1] if axis == 0 else mask[:, half : half + 1]
        counts += 0.5 * _histogram(middle)
    return counts


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another value (the image's edge is no boundary)."""
    edge = np.zeros(mask.shape, bool)
    vertical, horizontal = mask[1:] != mask[:-1], mask[:, 1:] != mask[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def _weighted_median(areas: list[float]) -> float:
    """The median of `areas` with each area weighted by itself: the area of the component
    that the middle pixel (of all the components' pixels, sorted by component area) lies in."""
    ordered = np.sort(np.asarray(areas))
    cumulative = np.cumsum(ordered)
    return _round(ordered[np.searchsorted(cumulative, cumulative[-1] / 2)])


def _size_stats(values: list[int]) -> SizeStats:
    return SizeStats(median=float(np.median(values)), min=int(min(values)), max=int(max(values)))


def _round(value: float) -> float:
    """Six significant digits: enough for the planner, readable in the JSON file."""
    return float(f"{float(value):.6g}")
