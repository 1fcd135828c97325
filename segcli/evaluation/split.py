"""Running a predictor over a labelled split: `evaluate_split`, the one evaluation loop.

Predictions are made exactly as `segcli predict` makes them (same preprocessing, batches,
resizing back, tiles and TTA when asked, the same pixel cap and loader workers), and compared
with the original masks, so the scores describe the masks a user gets, not the downscaled
training view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segcli.building import build_metrics
from segcli.data.format import ClassInfo, read_dataset_info, split_files
from segcli.data.images import max_image_pixels, read_image, read_mask
from segcli.errors import DataError
from segcli.evaluation.scores import ImageRecord, Scoring
from segcli.inference.predict_files import loader_workers, read_ahead
from segcli.inference.predictor import Predictor
from segcli.inference.preprocessing import Preprocessing
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


@dataclass
class _Labelled:
    """One labelled image as the loader gives it; `model_input` when it is predicted whole."""

    image_path: Path
    mask_path: Path
    image: np.ndarray
    truth: np.ndarray
    model_input: torch.Tensor | None


class _LabelledImages(Dataset):
    """Reads (in loader workers when there are any) each image and its mask, and
    preprocesses the image when it is predicted whole; it holds the preprocessing, not the
    Predictor, so that the model never travels to a worker."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        preprocessing: Preprocessing,
        max_pixels: int,
        preprocess: bool,
    ) -> None:
        self.pairs = pairs
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> _Labelled:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.preprocessing.image_channels, self.max_pixels)
        mask = read_mask(mask_path, self.max_pixels)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path} is {mask.shape[::-1]} but {image_path} is {image.shape[1::-1]}"
            )
        model_input = self.preprocessing.image_input(image) if self.preprocess else None
        return _Labelled(image_path, mask_path, image, mask, model_input)


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
    # as `segcli predict` does: whole images resized to the model's one input size go
    # through it `batch_size` at a time, paying each call's fixed cost once per batch;
    # tiles go window by window (`batch_size` windows a call), image by image
    batched = bool(predictor.size) and not tile
    loader = DataLoader(
        _LabelledImages(pairs, predictor.preprocessing, max_pixels, preprocess=not tile),
        batch_size=batch_size if batched else 1,
        collate_fn=list,
        num_workers=loader_workers(workers, predictor.device, len(pairs)),
    )
    for items in loader if loader.num_workers else read_ahead(loader):
        foregrounds = [None if foreground is None else foreground(i.truth.shape) for i in items]
        if tile:
            predictions = [
                predictor.predict_mask(
                    item.image, foreground=fg, tile=tile, overlap=overlap, batch_size=batch_size
                )
                for item, fg in zip(items, foregrounds, strict=True)
            ]
        else:
            predictions = predictor.predict_masks(
                torch.stack([item.model_input for item in items]),
                [item.truth.shape for item in items],
                foregrounds,
            )
        for item, prediction in zip(items, predictions, strict=True):
            record = ImageRecord.scored(
                Path(item.image_path), item.image, item.truth, prediction, count, item.mask_path
            )
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
