"""Overlap losses computed from soft counts: Dice and Tversky.

Counts are summed over the whole batch (not per image), per class, over non-ignored pixels.
One logit means binary (sigmoid, foreground only); several mean softmax over classes.
"""

from __future__ import annotations

import torch
from torch import nn

from segcli import ConfigError

from .inputs import check_inputs, class_probabilities


def soft_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per class, shape (C,)."""
    probabilities, truth, _ = class_probabilities(logits, target, ignore_index)
    dims = (0, 2, 3)
    true_positive = (probabilities * truth).sum(dims)
    false_positive = (probabilities * (1 - truth)).sum(dims)
    false_negative = ((1 - probabilities) * truth).sum(dims)
    return true_positive, false_positive, false_negative


class DiceLoss(nn.Module):
    """1 - mean over classes of (2 TP + s) / (2 TP + FP + FN + s)."""

    def __init__(self, ignore_index: int, smooth: float) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("dice", logits, target)
        tp, fp, fn = soft_counts(logits, target, self.ignore_index)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth)
        return 1 - dice.mean()


class TverskyLoss(nn.Module):
    """1 - mean over classes of (TP + s) / (TP + alpha FP + beta FN + s)."""

    def __init__(self, ignore_index: int, alpha: float, beta: float, smooth: float) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.alpha = alpha
        self.beta = beta
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("tversky", logits, target)
        tp, fp, fn = soft_counts(logits, target, self.ignore_index)
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return 1 - index.mean()


def _check_smooth(smooth: float) -> None:
    if smooth <= 0:
        raise ConfigError(
            f"smooth must be positive, got {smooth}",
            hint="it keeps classes absent from a batch from dividing by zero",
        )


def build_dice(num_classes: int, ignore_index: int = 255, *, smooth: float = 1.0) -> DiceLoss:
    """Soft Dice loss, multi-class (softmax) or binary (one logit, sigmoid). `smooth` is
    added to numerator and denominator: a class absent from truth and prediction scores 1."""
    _check_smooth(smooth)
    return DiceLoss(ignore_index, smooth)


def build_tversky(
    num_classes: int,
    ignore_index: int = 255,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
) -> TverskyLoss:
    """Tversky loss (Salehi et al. 2017): `alpha` weighs false positives, `beta` false
    negatives; beta > alpha favours recall. alpha = beta = 0.5 is Dice."""
    _check_smooth(smooth)
    if alpha < 0 or beta < 0 or alpha + beta == 0:
        raise ConfigError(f"alpha and beta must be non-negative, not both 0; got {alpha}, {beta}")
    return TverskyLoss(ignore_index, alpha, beta, smooth)
