"""Pixel-wise cross-entropy (multi-class) and binary cross-entropy on a single logit."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from segcli import ConfigError, DataError

from .inputs import check_inputs, check_multiclass, masked_mean, valid_mask

WEIGHTINGS = ("inverse", "median", "enet")


def class_weights_from_pixels(method: str, class_pixels: list[int]) -> list[float]:
    """Per-class weights from the training split's pixel counts.

    inverse: total / (K * n_c), so a balanced dataset gets weights 1;
    median: median(f) / f_c over the classes present (Eigen & Fergus 2015);
    enet: 1 / ln(1.02 + f_c) (Paszke et al. 2016; ERFNet's training code).
    A class with no pixels gets weight 0: it never appears as a target.
    """
    counts = [float(c) for c in class_pixels]
    total = sum(counts)
    if total <= 0:
        raise ConfigError("class_weights: the dataset's pixel counts are all zero")
    frequencies = [c / total for c in counts]
    present = sorted(f for f in frequencies if f > 0)
    if method == "inverse":
        weights = [total / (len(counts) * c) if c else 0.0 for c in counts]
    elif method == "median":
        middle = len(present) // 2
        if len(present) % 2:
            median = present[middle]
        else:
            median = (present[middle - 1] + present[middle]) / 2
        weights = [median / f if f else 0.0 for f in frequencies]
    elif method == "enet":
        weights = [1.0 / math.log(1.02 + f) if f else 0.0 for f in frequencies]
    else:
        raise ConfigError(
            f"class_weights={method!r} is not a weighting; use one of {', '.join(WEIGHTINGS)} "
            "or a list with one number per class"
        )
    return weights


class CrossEntropy(nn.Module):
    """Mean cross-entropy over non-ignored pixels, weighted like torch's `weight`.

    Unlike `nn.CrossEntropyLoss`, a batch whose pixels are all ignored gives 0, not NaN.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        weight: torch.Tensor | None,
        label_smoothing: float,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("ce", logits, target)
        check_multiclass("ce", logits, self.num_classes)
        per_pixel = F.cross_entropy(
            logits.float(),
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        valid = valid_mask(target, self.ignore_index)
        if self.weight is None:
            return masked_mean(per_pixel, valid)
        safe_target = torch.where(target == self.ignore_index, torch.zeros_like(target), target)
        pixel_weight = self.weight[safe_target] * valid
        return per_pixel.sum() / pixel_weight.sum().clamp(min=torch.finfo(torch.float32).tiny)


def build_cross_entropy(
    num_classes: int,
    ignore_index: int = 255,
    *,
    class_weights: list[float] | str | None = None,
    label_smoothing: float = 0.0,
    class_pixels: list[int] | None = None,
) -> CrossEntropy:
    """Cross-entropy. `class_weights`: a list (one per class) or inverse | median | enet,
    computed from the training split's pixel counts; `label_smoothing` in [0, 1)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    weight = None
    if isinstance(class_weights, str):
        if class_pixels is None:
            raise ConfigError(
                f"class_weights={class_weights!r} needs the dataset's per-class pixel counts, "
                "which this dataset.json lacks",
                hint="re-run `segcli prepare`, or give loss.class_weights as a list",
            )
        if len(class_pixels) != num_classes:
            raise ConfigError(
                f"dataset pixel counts list {len(class_pixels)} classes, the loss has {num_classes}"
            )
        class_weights = class_weights_from_pixels(class_weights, class_pixels)
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ConfigError(
                f"class_weights has {len(class_weights)} values for {num_classes} classes",
                hint="give one weight per class, in class-id order",
            )
        if any(w < 0 for w in class_weights):
            raise ConfigError(f"class_weights must not be negative, got {class_weights}")
        weight = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
    return CrossEntropy(num_classes, ignore_index, weight, label_smoothing)


class BinaryCrossEntropy(nn.Module):
    """BCE with logits on one output channel; the target's class 1 is the positive class."""

    def __init__(self, ignore_index: int, pos_weight: float | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor([float(pos_weight)])
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("bce", logits, target)
        if logits.shape[1] != 1:
            raise DataError(
                f"loss bce: logits have {logits.shape[1]} channels, bce needs exactly 1",
                hint="the engine builds single-logit models for bce; use ce for several classes",
            )
        valid = valid_mask(target, self.ignore_index)
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0].float(),
            (target == 1).float(),
            pos_weight=self.pos_weight,
            reduction="none",
        )
        return masked_mean(per_pixel, valid)


def build_binary_cross_entropy(
    num_classes: int,
    ignore_index: int = 255,
    *,
    pos_weight: float | None = None,
) -> BinaryCrossEntropy:
    """Binary cross-entropy on a single logit (model built with one output). `pos_weight`
    multiplies the loss of positive (class 1) pixels, for rare foregrounds."""
    if num_classes > 2:
        raise ConfigError(
            f"bce is for two classes, the dataset has {num_classes}", hint="use ce (or ce+dice)"
        )
    return BinaryCrossEntropy(ignore_index, pos_weight)


build_binary_cross_entropy.single_logit = True
