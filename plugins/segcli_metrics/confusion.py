"""Metrics derived from one confusion matrix, accumulated on the tensors' device."""

from __future__ import annotations

import torch

from segcli import DataError


class ConfusionMatrixMetric:
    """Accuracy, IoU and Dice from a (C, C) matrix of (truth row, prediction column) counts.

    `update` never synchronises with the host: pixels are added with `scatter_add_` into a
    flat matrix with two extra bins, one for ignored pixels and one for class ids outside
    0..C-1; the latter are reported as an error by `compute`.

    A class absent from both truth and prediction has no IoU or Dice (NaN) and is left out
    of the means; a class never in the truth has no accuracy (NaN), left out of
    `mean_class_accuracy`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts: torch.Tensor | None = None

    def reset(self) -> None:
        self.counts = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = self.num_classes
        if self.counts is None:
            self.counts = torch.zeros(n * n + 2, dtype=torch.int64, device=target.device)
        target = target.reshape(-1).to(torch.int64)
        pred = pred.reshape(-1).to(torch.int64)
        in_range = (target >= 0) & (target < n) & (pred >= 0) & (pred < n)
        index = torch.where(in_range, target * n + pred, n * n + 1)
        index = torch.where(target == self.ignore_index, n * n, index)
        self.counts.scatter_add_(0, index, torch.ones_like(index))

    @property
    def matrix(self) -> torch.Tensor:
        """The (truth, prediction) count matrix so far, on the CPU."""
        n = self.num_classes
        if self.counts is None:
            return torch.zeros(n, n, dtype=torch.int64)
        return self.counts[: n * n].reshape(n, n).cpu()

    def compute(self) -> dict[str, float | list[float] | list[list[int]]]:
        if self.counts is not None and int(self.counts[-1]) > 0:
            raise DataError(
                f"{int(self.counts[-1])} pixels had a predicted or true class id outside "
                f"0..{self.num_classes - 1} (and not the ignore index {self.ignore_index})",
                hint="check the dataset's masks and the model's number of outputs",
            )
        return confusion_scores(self.matrix)


def confusion_scores(matrix: torch.Tensor) -> dict[str, float | list[float] | list[list[int]]]:
    """All scores of a (truth, prediction) confusion matrix; see docs/losses-and-metrics.md."""
    counts = matrix.double()
    true_positive = counts.diag()
    truth = counts.sum(1)
    predicted = counts.sum(0)
    union = truth + predicted - true_positive
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    dice = torch.where(union > 0, 2 * true_positive / (truth + predicted).clamp(min=1), nan)
    class_accuracy = torch.where(truth > 0, true_positive / truth.clamp(min=1), nan)
    total = counts.sum()
    return {
        "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else float("nan"),
        "mean_class_accuracy": float(class_accuracy.nanmean()),
        "miou": float(iou.nanmean()),
        "mean_dice": float(dice.nanmean()),
        "class_accuracy": [float(v) for v in class_accuracy],
        "iou": [float(v) for v in iou],
        "dice": [float(v) for v in dice],
        "matrix": matrix.long().tolist(),
    }
