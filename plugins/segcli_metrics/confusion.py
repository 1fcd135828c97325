"""Metrics derived from one confusion matrix, accumulated on the tensors' device."""

from __future__ import annotations

import torch


class ConfusionMatrixMetric:
    """Pixel accuracy, per-class IoU and mIoU from a (C, C) matrix of (truth, prediction) counts.

    Classes absent from both truth and prediction have no IoU (reported as NaN) and are left
    out of the mean.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor | None = None

    def reset(self) -> None:
        self.matrix = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = self.num_classes
        if self.matrix is None:
            self.matrix = torch.zeros(n, n, dtype=torch.int64, device=target.device)
        keep = target != self.ignore_index
        index = target[keep].to(torch.int64) * n + pred[keep].to(torch.int64)
        self.matrix += torch.bincount(index, minlength=n * n).reshape(n, n)

    def compute(self) -> dict[str, float | list[float] | list[list[int]]]:
        n = self.num_classes
        matrix = (self.matrix if self.matrix is not None else torch.zeros(n, n)).double().cpu()
        true_positive = matrix.diag()
        truth = matrix.sum(1)
        predicted = matrix.sum(0)
        union = truth + predicted - true_positive
        iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)
        total = matrix.sum()
        return {
            "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else float("nan"),
            "miou": float(iou.nanmean()),
            "iou": [float(v) for v in iou],
            "matrix": matrix.long().tolist(),
        }
