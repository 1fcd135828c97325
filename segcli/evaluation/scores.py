"""Per-image confusion counts, the one IoU rule, and feeding the metric plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segcli.data.format import IGNORE_INDEX
from segcli.errors import DataError


def confusion_matrix(
    prediction: np.ndarray, truth: np.ndarray, num_classes: int, source: Path | str = "a mask"
) -> np.ndarray:
    """(K, K) int64 counts of (truth row, prediction column) over the labelled pixels of one
    image; ignored pixels are left out. A class id outside 0..K-1 is a DataError naming
    `source`, not silently dropped (as the confusion metric plugin does)."""
    labelled = truth != IGNORE_INDEX
    true = truth[labelled].astype(np.int64)
    predicted = prediction[labelled].astype(np.int64)
    if true.size and max(int(true.max()), int(predicted.max())) >= num_classes:
        raise DataError(
            f"{source}: class ids up to {max(int(true.max()), int(predicted.max()))} in truth or "
            f"prediction, but the model has {num_classes} classes (ids 0..{num_classes - 1})",
            hint="check the dataset's masks and the model's number of outputs",
        )
    counts = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_scores(confusion: np.ndarray) -> tuple[list[float], float]:
    """(IoU per class, mean IoU) of a confusion matrix, by the one rule of
    docs/losses-and-metrics.md: a class absent from both truth and prediction has no IoU
    (NaN) and is left out of the mean; with no labelled pixel at all the mean is NaN too
    (the image has no score). The confusion metric plugin computes its split scores alike."""
    counts = confusion.astype(np.float64)
    true_positive = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - true_positive
    present = union > 0
    per_class = np.full(len(counts), np.nan)
    per_class[present] = true_positive[present] / union[present]
    mean = float(per_class[present].mean()) if present.any() else float("nan")
    return [float(value) for value in per_class], mean


def reset_metrics(metrics: dict[str, Any]) -> None:
    for metric in metrics.values():
        metric.reset()


def update_metrics(metrics: dict[str, Any], predicted: Any, truth: Any) -> None:
    """Feed every metric plugin one batch of (N, H, W) class ids and true masks (tensors)."""
    for metric in metrics.values():
        metric.update(predicted, truth)


def metric_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """Every metric plugin's results, keyed `<metric>/<key>`."""
    return {
        f"{name}/{key}": value
        for name, metric in metrics.items()
        for key, value in metric.compute().items()
    }
