"""Out-of-fold scores of a cross-validation run: each labelled image of the folds predicted by
the one fold that did not train on it, scored per fold and pooled over every image, by the
metric plugins of the folds' configuration (`segcli evaluate DATASET --cv RUN`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segcli.building import build_metrics
from segcli.data.folds import pairs_of_fold
from segcli.data.format import read_dataset_info
from segcli.evaluation.scores import ImageRecord, Scoring
from segcli.evaluation.split import SplitEvaluation, evaluate_split
from segcli.inference.predictor import LEARNED_TTA, Predictor
from segcli.runs.cross_validation import FOLDS_FILE, fold_checkpoints


@dataclass
class OutOfFoldEvaluation:
    """Each fold's scores on the images it held out, and the scores of all of them pooled."""

    folds: list[SplitEvaluation]
    metrics: dict[str, Any]  # the metric plugins fed every out-of-fold image
    confusion: np.ndarray
    per_image: list[tuple[int, str, float]] = field(default_factory=list)  # fold, name, IoU

    @property
    def images(self) -> int:
        return len(self.per_image)


def out_of_fold_pairs(run: Path, dataset_dir: Path) -> list[list[tuple[Path, Path]]]:
    """Per fold, the (image, mask) files it held out, from the run's folds file."""
    info = read_dataset_info(dataset_dir)
    count = len(fold_checkpoints(run))
    folds_file = Path(run) / FOLDS_FILE
    return [pairs_of_fold(folds_file, k, dataset_dir, info, "val") for k in range(count)]


def evaluate_out_of_fold(
    run: Path,
    dataset_dir: Path,
    *,
    device: str = "auto",
    tta: str = LEARNED_TTA,
    post_processing: bool = True,
    tile: int | None = None,
    overlap: float | None = None,
    workers: int | None = None,
    max_pixels: int | None = None,
    on_image: Callable[[ImageRecord], None] | None = None,
) -> OutOfFoldEvaluation:
    """Predict the images each fold of `run` held out with that fold's `best` checkpoint
    (with its own learned post-processing unless `post_processing` is off), exactly as
    `segcli evaluate --checkpoint RUN/fold-k` would, and score them per fold and pooled."""
    checkpoints = fold_checkpoints(run)
    held_out = out_of_fold_pairs(run, dataset_dir)
    result = OutOfFoldEvaluation([], {}, np.zeros((0, 0), np.int64))
    pooled: Scoring | None = None  # the folds share one configuration, so one set of metrics
    for fold, (checkpoint, pairs) in enumerate(zip(checkpoints, held_out, strict=True)):
        predictor = Predictor(checkpoint, device, tta=tta, post_processing=post_processing)
        if pooled is None:
            metrics = build_metrics(predictor.config, predictor.dataset_info())
            pooled = Scoring(metrics, len(predictor.classes))

        def each_image(record: ImageRecord, fold: int = fold, pooled: Scoring = pooled) -> None:
            pooled.add_image(record)
            result.per_image.append((fold, record.path.name, record.iou))
            if on_image is not None:
                on_image(record)

        evaluation = evaluate_split(
            predictor,
            dataset_dir,
            f"fold-{fold}",
            pairs=pairs,
            tile=tile,
            overlap=overlap,
            workers=workers,
            max_pixels=max_pixels,
            on_image=each_image,
        )
        result.folds.append(evaluation)
    if pooled is not None:
        result.metrics, result.confusion = pooled.metric_scores(), pooled.confusion
    return result


def out_of_fold_report(run: Path, dataset_dir: Path, evaluation: OutOfFoldEvaluation) -> dict:
    """`segcli evaluate --cv`'s JSON report: per-fold and pooled scores, each image's IoU."""
    classes = evaluation.folds[0].classes
    return {
        "run": str(run),
        "dataset": str(dataset_dir),
        "images": evaluation.images,
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in classes],
        "metrics": evaluation.metrics,
        "folds": [
            {"fold": fold, "images": e.images, "metrics": e.metrics}
            for fold, e in enumerate(evaluation.folds)
        ],
        "per_image": [
            {"image": name, "fold": fold, "miou": iou} for fold, name, iou in evaluation.per_image
        ],
    }
