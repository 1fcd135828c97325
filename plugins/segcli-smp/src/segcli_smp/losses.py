"""smp's Dice loss as a segcli loss: ``(num_classes, ignore_index, **options) -> loss``.

smp's other losses are left out on purpose: its LovaszLoss fails on a batch whose pixels
are all ignored, and its FocalLoss scores each class one-vs-rest through a sigmoid, so
confident softmax logits do not bring it near zero (segcli's contract suite checks both).
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn


class ShapeCheckedLoss(nn.Module):
    """A loss of (N, C, H, W) logits and (N, H, W) targets that names mismatched shapes,
    where smp's own loss would fail in a reshape deep inside."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if (
            target.dim() != 3
            or logits.shape[0] != target.shape[0]
            or logits.shape[2:] != target.shape[1:]
        ):
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} do not match a target of shape "
                f"{tuple(target.shape)}: expected (N, C, H, W) and (N, H, W)"
            )
        return self.loss(logits, target)


def dice(
    num_classes: int, ignore_index: int, *, log_loss: bool = False, smooth: float = 0.0
) -> ShapeCheckedLoss:
    """smp's multiclass DiceLoss on softmax probabilities, ignored pixels left out."""
    return ShapeCheckedLoss(
        DiceLoss("multiclass", log_loss=log_loss, smooth=smooth, ignore_index=ignore_index)
    )
