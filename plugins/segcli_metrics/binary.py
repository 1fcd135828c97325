"""Foreground metrics of a binary segmentation: precision, recall, F1 and IoU of one class."""

from __future__ import annotations

import torch


class BinaryMetric:
    """Counts of true/false positives/negatives of `positive_class`, kept on the device.

    Predictions arrive as class ids: for a single-logit model the engine has already applied
    its probability threshold. A score whose denominator is zero (no positive predicted, or
    none in the truth) is NaN, except that F1 and IoU are 1 when both are empty.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, positive_class: int = 1) -> None:
        if not 0 <= positive_class < max(num_classes, 2):
            raise ValueError(f"positive_class {positive_class} is not a class of {num_classes}")
        self.ignore_index = ignore_index
        self.positive_class = positive_class
        self.counts: torch.Tensor | None = None

    def reset(self) -> None:
        self.counts = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.ignore_index
        predicted = (pred == self.positive_class) & valid
        actual = target == self.positive_class  # never the ignore index: a valid pixel
        # four counts instead of four masks: a post-processing search scores ~20 rules on
        # tens of millions of pixels, and validation every epoch
        tp, positives, actuals, total = (
            torch.count_nonzero(m) for m in (predicted & actual, predicted, actual, valid)
        )
        batch = torch.stack([tp, positives - tp, actuals - tp, total - positives - actuals + tp])
        self.counts = batch if self.counts is None else self.counts + batch

    def compute(self) -> dict[str, float]:
        tp, fp, fn, tn = (float(v) for v in (self.counts if self.counts is not None else [0] * 4))
        nan = float("nan")
        total = tp + fp + fn + tn
        if total == 0:
            return dict.fromkeys(("precision", "recall", "f1", "iou", "accuracy"), nan)
        both_empty = tp + fp + fn == 0
        return {
            "precision": tp / (tp + fp) if tp + fp else nan,
            "recall": tp / (tp + fn) if tp + fn else nan,
            "f1": 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn),
            "iou": 1.0 if both_empty else tp / (tp + fp + fn),
            "accuracy": (tp + tn) / total,
        }
