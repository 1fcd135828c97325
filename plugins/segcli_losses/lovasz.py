"""Lovasz-Softmax and Lovasz hinge losses (Berman et al. 2018): a convex surrogate of IoU.

Ignored pixels are not removed (that would need the host to learn how many remain) but
given zero error, which sorts them last where they contribute nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from .inputs import check_inputs, class_probabilities


def lovasz_gradient(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss for errors sorted descending."""
    total = sorted_truth.sum(-1, keepdim=True)
    intersection = total - sorted_truth.cumsum(-1)
    union = total + (1 - sorted_truth).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def _lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    probabilities, truth, valid = class_probabilities(logits, target, ignore_index)
    if logits.shape[1] == 1:  # binary via sigmoid: both classes, like a two-way softmax
        probabilities = torch.cat([valid - probabilities, probabilities], 1)
        truth = torch.cat([valid - truth, truth], 1)
    classes = probabilities.shape[1]
    errors = (truth - probabilities).abs().transpose(0, 1).reshape(classes, -1)
    truth = truth.transpose(0, 1).reshape(classes, -1)
    errors_sorted, order = errors.sort(dim=1, descending=True)
    per_class = (errors_sorted * lovasz_gradient(truth.gather(1, order))).sum(1)
    present = (truth.sum(1) > 0).float()
    return (per_class * present).sum() / present.sum().clamp(min=1.0)


def _lovasz_hinge(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    valid = (target != ignore_index).float().flatten()
    truth = (target == 1).float().flatten()
    signs = 2 * truth - 1
    # ignored pixels get a negative error: after the ReLU they add nothing, and sort last
    errors = torch.where(valid > 0, 1 - logits[:, 0].float().flatten() * signs, -1.0)
    errors_sorted, order = errors.sort(descending=True)
    return (torch.relu(errors_sorted) * lovasz_gradient(truth[order])).sum()


class LovaszLoss(nn.Module):
    def __init__(self, ignore_index: int, per_image: bool) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("lovasz", logits, target)
        loss = _lovasz_hinge if logits.shape[1] == 1 else _lovasz_softmax
        if not self.per_image:
            return loss(logits, target, self.ignore_index)
        return torch.stack(
            [
                loss(logits[i : i + 1], target[i : i + 1], self.ignore_index)
                for i in range(logits.shape[0])
            ]
        ).mean()


def build_lovasz(
    num_classes: int, ignore_index: int = 255, *, per_image: bool = False
) -> LovaszLoss:
    """Lovasz-Softmax over the classes present in the batch (several logits), or the
    Lovasz hinge (one logit). `per_image`: average the loss of each image instead of
    computing it over the batch."""
    return LovaszLoss(ignore_index, per_image)
