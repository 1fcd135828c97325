"""Running a predictor over a labelled split: `evaluate_split`, the one evaluation loop.

Predictions are made exactly as `segcli predict` makes them (same preprocessing, resizing
back, tiles and TTA when asked, the same pixel cap and loader workers), and compared with
the original masks, so the scores describe the masks a user gets, not the downscaled
training view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from segcli.building import build_metrics
from segcli.data.format import ClassInfo, read_dataset_info, split_files
from segcli.data.images import max_image_pixels, read_image, read_mask
from segcli.errors import DataError
from segcli.evaluation.scores import ImageRecord, Scoring
from segcli.inference.predict_files import loader_workers
from segcli.inference.predictor import Predictor
from segcli.inference.tiling import tiling_options

Pair = tuple[Path, Path]  # (image file, mask file)


@dataclass
class SplitEvaluation:
    """What `evaluate_split` found: the metric plugins' scores, the summed confusion matrix
    (the per-image ones added up), each image's mean IoU and the worst images."""

    dataset_dir: Path
    split: str
    classes: list[ClassInfo]
    metrics: dict[str, Any]
    confusion: np.ndarray
    per_image: list[tuple[str, float]]  # (file name, mean IoU)
    worst: list[ImageRecord]  # lowest IoU first

    @property
    def images(self) -> int:
        return len(self.per_image)


class _LabelledImages(Dataset):
    def __init__(self, pairs: Sequence[Pair], channels: int, max_pixels: int) -> None:
        self.pairs = pairs
        self.channels = channels
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.channels, self.max_pixels)
        mask = read_mask(mask_path, self.max_pixels)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path} is {mask.shape[::-1]} but {image_path} is {image.shape[1::-1]}"
            )
        return image_path, mask_path, image, mask


def _unchanged(item: Any) -> Any:
    return item  # keep numpy arrays as they are (the default converts them to tensors)


def labelled_pairs(dataset_dir: Path, split: str) -> list[Pair]:
    """(image, mask) files of a split's labelled images; a DataError when there are none."""
    info = read_dataset_info(dataset_dir)
    if split not in info.splits:
        raise DataError(
            f"{dataset_dir} has no split {split!r}; its splits: {', '.join(info.splits)}"
        )
    pairs = [(image, mask) for image, mask in split_files(dataset_dir, split) if mask is not None]
    if not pairs:
        raise DataError(
            f"split {split!r} of {dataset_dir} has no masks to evaluate against",
            hint=f"labelled splits: {', '.join(info.labelled_splits) or 'none'}",
        )
    return pairs


def evenly_spaced(pairs: Sequence[Pair], most: int) -> list[Pair]:
    """At most `most` of `pairs` (0: all), evenly spaced over the split."""
    if 0 < most < len(pairs):
        return [pairs[i * len(pairs) // most] for i in range(most)]
    return list(pairs)


def check_classes(predictor: Predictor, dataset_dir: Path) -> None:
    info = read_dataset_info(dataset_dir)
    ours = [c.name for c in predictor.classes]
    if info.class_names != ours:
        raise DataError(
            f"{dataset_dir} has classes {info.class_names} but the model predicts {ours}",
            hint="evaluate on the dataset the model was trained for",
        )


def evaluate_split(
    predictor: Predictor,
    dataset_dir: Path,
    split: str,
    *,
    pairs: Sequence[Pair] | None = None,
    metrics: dict[str, Any] | None = None,
    worst: int = 0,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    max_pixels: int | None = None,
    on_image: Callable[[ImageRecord], None] | None = None,
    foreground: Callable[[tuple[int, int]], np.ndarray] | None = None,
) -> SplitEvaluation:
    """Predict each labelled image of a split (or only `pairs` of it) and score it.

    Each image's record (image, truth, prediction, confusion counts, mean IoU) goes to
    `on_image` as soon as it is made; the metric plugins (`metrics`, by default those of
    the predictor's configuration; `{}` for none) are fed every image; the `worst` images
    by mean IoU are kept, the lowest first (images without a score are never among them).
    A two-class model's foreground probabilities of each image go into the (H, W) array
    `foreground(shape)` returns, when given."""
    tile, overlap = tiling_options(tile, overlap)
    max_pixels = max_image_pixels(max_pixels)
    dataset_dir = Path(dataset_dir)
    check_classes(predictor, dataset_dir)
    if pairs is None:
        pairs = labelled_pairs(dataset_dir, split)
    if metrics is None:
        metrics = build_metrics(predictor.config, predictor.dataset_info())
    count = len(predictor.classes)
    scoring = Scoring(metrics, count, worst=worst)
    loader = DataLoader(
        _LabelledImages(pairs, predictor.channels, max_pixels),
        batch_size=None,
        collate_fn=_unchanged,
        num_workers=loader_workers(workers, predictor.device, len(pairs)),
    )
    for image_path, mask_path, image, truth in loader:
        prediction = predictor.predict_mask(
            image,
            foreground=None if foreground is None else foreground(truth.shape),
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
        )
        record = ImageRecord.scored(Path(image_path), image, truth, prediction, count, mask_path)
        scoring.add_image(record)
        if on_image is not None:
            on_image(record)
    return SplitEvaluation(
        dataset_dir,
        split,
        predictor.classes,
        scoring.metric_scores(),
        scoring.confusion,
        scoring.per_image,
        scoring.worst(),
    )
