"""Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segcli import ConfigError

from .inputs import check_inputs, masked_mean, valid_mask


class FocalLoss(nn.Module):
    def __init__(self, ignore_index: int, gamma: float, alpha: torch.Tensor | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("focal", logits, target)
        valid = valid_mask(target, self.ignore_index)
        safe_target = torch.where(target == self.ignore_index, torch.zeros_like(target), target)
        logits = logits.float()
        if logits.shape[1] == 1:
            positive = (safe_target == 1).float()
            log_p_true = -F.binary_cross_entropy_with_logits(
                logits[:, 0], positive, reduction="none"
            )
            class_of_pixel = positive.long()
        else:
            log_p_true = F.log_softmax(logits, 1).gather(1, safe_target.unsqueeze(1))[:, 0]
            class_of_pixel = safe_target
        per_pixel = -((1 - log_p_true.exp()).clamp(min=0) ** self.gamma) * log_p_true
        if self.alpha is not None:
            per_pixel = per_pixel * self.alpha[class_of_pixel]
        return masked_mean(per_pixel, valid)


def build_focal(
    num_classes: int,
    ignore_index: int = 255,
    *,
    gamma: float = 2.0,
    alpha: float | list[float] | None = None,
) -> FocalLoss:
    """Focal loss, multi-class or binary (one logit). `gamma` down-weights easy pixels;
    `alpha`: per-class weights (a list), or for binary the weight of class 1 (class 0
    gets 1 - alpha, as in the paper's 0.25)."""
    if gamma < 0:
        raise ConfigError(f"gamma must be non-negative, got {gamma}")
    weights = None
    if isinstance(alpha, (int, float)):
        if not 0 <= alpha <= 1:
            raise ConfigError(
                f"a single alpha is the positive class's weight in [0, 1], got {alpha}"
            )
        weights = [1 - float(alpha), float(alpha)]
    elif alpha is not None:
        if len(alpha) != num_classes:
            raise ConfigError(f"alpha has {len(alpha)} values for {num_classes} classes")
        weights = [float(a) for a in alpha]
    tensor = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    return FocalLoss(ignore_index, gamma, tensor)
