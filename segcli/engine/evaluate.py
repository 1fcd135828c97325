"""Evaluating a checkpoint on a prepared split, at each image's own size.

Predictions are made exactly as `segcli predict` makes them (same preprocessing, resizing
back, tiles and TTA when asked), and compared with the original masks, so the scores
describe the masks a user gets, not the downscaled training view.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segcli.data.format import IGNORE_INDEX, read_dataset_info, split_files
from segcli.data.images import max_image_pixels, read_image, read_mask
from segcli.engine.build import build_metrics
from segcli.engine.inputs import is_inside
from segcli.engine.predict import loader_workers
from segcli.engine.predictor import Predictor
from segcli.engine.tiling import tiling_options
from segcli.errors import DataError, UsageError
from segcli.files import atomic_write, write_png_atomic
from segcli.ledger import OutputLedger
from segcli.palette import colorize


def image_iou(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean IoU of one image over the classes in its truth or prediction (ignore left out)."""
    valid = truth != IGNORE_INDEX
    pred, true = prediction[valid].astype(np.int64), truth[valid].astype(np.int64)
    counts = np.bincount(true * num_classes + pred, minlength=num_classes**2)
    matrix = counts[: num_classes**2].reshape(num_classes, num_classes)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    present = union > 0
    return float((np.diag(matrix)[present] / union[present]).mean()) if present.any() else 1.0


class _LabelledImages(Dataset):
    def __init__(self, pairs: list[tuple[Path, Path]], channels: int, max_pixels: int) -> None:
        self.pairs = pairs
        self.channels = channels
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Path, np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.channels, self.max_pixels)
        mask = read_mask(mask_path, self.max_pixels)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path} is {mask.shape[::-1]} but {image_path} is {image.shape[1::-1]}"
            )
        return image_path, image, mask


def _unchanged(item: Any) -> Any:
    return item  # keep numpy arrays as they are (the default converts them to tensors)


def labelled_pairs(dataset_dir: Path, split: str) -> list[tuple[Path, Path]]:
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
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    predictions_dir: Path | None = None,
    max_pixels: int | None = None,
    ledger: OutputLedger | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Scores of every metric plugin of the checkpoint's config, plus per-image mean IoU.

    Predicted masks go to `predictions_dir` when given, recorded in `ledger` (see
    `check_outputs`, which should have vetted them first)."""
    tile, overlap = tiling_options(tile, overlap)
    max_pixels = max_image_pixels(max_pixels)
    dataset_dir = Path(dataset_dir)
    check_classes(predictor, dataset_dir)
    pairs = labelled_pairs(dataset_dir, split)
    metrics = build_metrics(predictor.config, predictor.dataset_info())
    for metric in metrics.values():
        metric.reset()
    loader = DataLoader(
        _LabelledImages(pairs, predictor.channels, max_pixels),
        batch_size=None,
        collate_fn=_unchanged,
        num_workers=loader_workers(workers, predictor.device, len(pairs)),
    )
    per_image = []
    for image_path, image, truth in loader:
        prediction = predictor.predict_mask(
            image, tile=tile, overlap=overlap, batch_size=batch_size
        )
        pred_tensor = torch.from_numpy(prediction).long()[None]
        truth_tensor = torch.from_numpy(truth).long()[None]
        for metric in metrics.values():
            metric.update(pred_tensor, truth_tensor)
        per_image.append(
            {
                "image": Path(image_path).name,
                "miou": image_iou(prediction, truth, len(predictor.classes)),
            }
        )
        if predictions_dir is not None:
            for path, picture in zip(
                prediction_files(predictions_dir, Path(image_path)),
                (prediction, colorize(prediction, predictor.palette)),
                strict=True,
            ):
                write_png_atomic(path, picture, ledger)
        if progress:
            progress(1)
    scores: dict[str, Any] = {}
    for name, metric in metrics.items():
        for key, value in metric.compute().items():
            scores[f"{name}/{key}"] = value
    return {
        "dataset": str(dataset_dir),
        "split": split,
        "images": len(pairs),
        "classes": [
            {"id": c.id, "name": c.name, "color": list(c.color)} for c in predictor.classes
        ],
        "metrics": scores,
        "per_image": per_image,
    }


def default_report_path(checkpoint: Path, split: str) -> Path:
    """`<run>/eval-<split>.json` for a checkpoint in a run folder, else next to the file."""
    checkpoint = Path(checkpoint)
    if (checkpoint.parent / "config.toml").is_file():
        return checkpoint.parent / f"eval-{split}.json"
    return checkpoint.with_name(f"{checkpoint.stem}-eval-{split}.json")


def prediction_files(predictions_dir: Path, image: Path) -> tuple[Path, Path]:
    """(mask, colour mask) written for one evaluated image."""
    return predictions_dir / f"{image.stem}.png", predictions_dir / f"{image.stem}.color.png"


def claim_outputs(
    report_path: Path,
    predictions_dir: Path | None,
    dataset_dir: Path,
    checkpoint: Path,
    pairs: list[tuple[Path, Path]],
    force: bool,
) -> OutputLedger:
    """The ledger of the report's folder, opened once it is sure that no output lies inside the
    dataset or replaces the checkpoint, and (unless `force`) that none replaces a file
    segcli did not write there. Called before the (long) evaluation."""
    for path in (report_path, predictions_dir):
        if path is not None and is_inside(path, dataset_dir):
            raise UsageError(
                f"output {path} is inside the dataset {dataset_dir}",
                hint="choose an --out outside the dataset folder",
            )
    ledger = OutputLedger(report_path.parent)
    outputs = [report_path]
    if predictions_dir is not None:
        outputs += [path for image, _ in pairs for path in prediction_files(predictions_dir, image)]
    ledger.check_replaceable(outputs, force, inputs=[checkpoint])
    ledger.open_folder()
    return ledger


def write_json_atomic(path: Path, data: Any, ledger: OutputLedger | None = None) -> None:
    with atomic_write(path, ledger=ledger) as stream:
        stream.write(json.dumps(data, indent=2).encode())
