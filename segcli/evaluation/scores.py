"""The one scoring path: per-image confusion counts, the one IoU rule, and `Scoring`, the
accumulator every evaluation feeds (a split's images, validation's batches) and the metric
plugins are fed through."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

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


@dataclass
class ImageRecord:
    """One evaluated image: what was predicted, the truth, and its scores."""

    path: Path
    image: np.ndarray  # uint8 (H, W, C), as the model read it
    truth: np.ndarray  # (H, W) class ids, 255 ignored
    prediction: np.ndarray  # (H, W) uint8 class ids
    confusion: np.ndarray  # (K, K) counts, truth rows x prediction columns
    iou: float  # mean IoU of `confusion` (NaN: no labelled pixel, no score)

    @classmethod
    def scored(
        cls,
        path: Path,
        image: np.ndarray,
        truth: np.ndarray,
        prediction: np.ndarray,
        num_classes: int,
        source: Path | str = "a mask",
    ) -> ImageRecord:
        """The record of one prediction: its confusion counts, and its IoU from those counts."""
        confusion = confusion_matrix(prediction, truth, num_classes, source)
        return cls(path, image, truth, prediction, confusion, iou_scores(confusion)[1])

    @property
    def name(self) -> str:
        return self.path.stem


class Scoring:
    """What a scored split adds up, fed one prediction and its truth at a time.

    Every prediction feeds the metric plugins (`metrics`, reset here). An image
    (`add_image`, at its own size) also adds its confusion counts to the split's
    (`num_classes` square), its mean IoU to `per_image`, and may be kept among the `worst`.
    A batch (`add_batch`, tensors on the device, as validation while training makes them)
    feeds only the metric plugins and, given `loss_device`, the mean loss: nothing in it
    copies to the host or waits for the device before `metric_scores` and `mean_loss`."""

    def __init__(
        self,
        metrics: dict[str, Any],
        num_classes: int = 0,
        *,
        worst: int = 0,
        loss_device: torch.device | None = None,
    ) -> None:
        for metric in metrics.values():
            metric.reset()
        self.metrics = metrics
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.per_image: list[tuple[str, float]] = []  # (file name, mean IoU)
        self._worst_kept = worst
        self._kept: list[tuple[float, int, ImageRecord]] = []  # a max-heap via negation
        # [sum of batch losses, batches with a labelled pixel], added up across processes
        self._losses = None if loss_device is None else torch.zeros(2, device=loss_device)

    def add_image(self, record: ImageRecord) -> None:
        self._feed_metrics(
            torch.from_numpy(record.prediction).long()[None],
            torch.from_numpy(record.truth).long()[None],
        )
        self.confusion += record.confusion
        self.per_image.append((record.path.name, record.iou))
        if self._worst_kept > 0 and record.iou == record.iou:  # NaN: no score, never kept
            heapq.heappush(self._kept, (-record.iou, -len(self.per_image), record))
            if len(self._kept) > self._worst_kept:
                heapq.heappop(self._kept)

    def add_batch(
        self, predicted: torch.Tensor, truth: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        """(N, H, W) class ids and true masks; `loss`, the batch's (kept when this Scoring was
        given a `loss_device`), counts only when the batch has a labelled pixel: under
        torchrun the processes' shares are evened out with padding samples whose pixels are
        all ignored, which must not count."""
        self._feed_metrics(predicted, truth)
        if loss is not None:
            labelled = (truth != IGNORE_INDEX).any()
            loss = torch.where(labelled, loss.float(), 0.0)
            self._losses += torch.stack([loss, labelled.float()])

    def sum_across_processes(self) -> None:
        """Under torchrun, every process's metric states and losses added up, so that each
        holds the scores of the whole split. Metric plugins keep their state in tensors that
        are sums over samples (a confusion matrix, counts, score totals), so sums are exact."""
        for metric in self.metrics.values():
            for value in vars(metric).values():
                if isinstance(value, torch.Tensor):
                    dist.all_reduce(value)
        if self._losses is not None:
            dist.all_reduce(self._losses)

    def metric_scores(self) -> dict[str, Any]:
        """Every metric plugin's results, keyed `<metric>/<key>`."""
        return {
            f"{name}/{key}": value
            for name, metric in self.metrics.items()
            for key, value in metric.compute().items()
        }

    def mean_loss(self) -> float | None:
        """The mean of the batches' losses (None when no loss is kept)."""
        if self._losses is None:
            return None
        return float(self._losses[0] / self._losses[1].clamp(min=1))

    def worst(self) -> list[ImageRecord]:
        """The kept images, the lowest mean IoU first (the earlier image first on a tie)."""
        return [record for _, _, record in sorted(self._kept, key=lambda k: (-k[0], -k[1]))]

    def _feed_metrics(self, predicted: torch.Tensor, truth: torch.Tensor) -> None:
        for metric in self.metrics.values():
            metric.update(predicted, truth)
