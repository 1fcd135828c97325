"""Pixel-wise cross-entropy."""

from __future__ import annotations

import torch
from torch import nn


def build_cross_entropy(
    num_classes: int,
    ignore_index: int = 255,
    *,
    class_weights: list[float] | None = None,
    label_smoothing: float = 0.0,
) -> nn.Module:
    weight = None
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights has {len(class_weights)} values for {num_classes} classes"
            )
        weight = torch.tensor(class_weights, dtype=torch.float32)
    return nn.CrossEntropyLoss(
        weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
