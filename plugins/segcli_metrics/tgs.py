"""The TGS Salt Identification competition metric: per-image precision over IoU thresholds."""

from __future__ import annotations

import torch


class TGSMetric:
    """Mean over images of the mean over thresholds t in 0.50:0.05:0.95 of "IoU > t".

    With one object per image (the salt mask), precision at a threshold is 1 for a hit and
    0 otherwise. Empty masks follow the competition: an empty truth scores 1 when the
    prediction is empty too and 0 otherwise; an empty prediction for a non-empty truth
    scores 0. Ignored pixels are left out of both masks; an image whose pixels are all
    ignored is not counted. The thresholds are compared as
    20 * intersection > k * union (k = 10..19), in integers, so IoU = 0.55 exactly is no hit
    at 0.55 whatever the rounding.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, positive_class: int = 1) -> None:
        self.ignore_index = ignore_index
        self.positive_class = positive_class
        self.total: torch.Tensor | None = None
        self.images: torch.Tensor | None = None

    def reset(self) -> None:
        self.total = None
        self.images = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.ignore_index
        predicted = ((pred == self.positive_class) & valid).flatten(1)
        actual = ((target == self.positive_class) & valid).flatten(1)
        intersection = (predicted & actual).sum(1)
        union = (predicted | actual).sum(1)
        twentieths = torch.arange(10, 20, device=union.device)
        hits = (20 * intersection[:, None] > twentieths * union[:, None]).double().mean(1)
        scores = torch.where(union == 0, torch.ones_like(hits), hits)
        labelled = valid.flatten(1).any(1)  # an image with every pixel ignored is no sample
        total, images = (scores * labelled).sum(), labelled.sum()
        if self.total is None:
            self.total, self.images = total, images
        else:
            self.total, self.images = self.total + total, self.images + images

    def compute(self) -> dict[str, float]:
        if self.images is None or int(self.images) == 0:
            return {"score": float("nan")}
        return {"score": float(self.total) / int(self.images)}
