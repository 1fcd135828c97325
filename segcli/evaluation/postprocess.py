"""Post-processing learned on validation predictions, for two-class (foreground/background)
models: the probability threshold, the smallest connected foreground region kept, and
"an image with less foreground than this is empty" (TGS's score rewards an empty answer on an
empty image as much as a perfect mask on a full one).

Sizes are shares of the image's pixels, so a rule chosen at one resolution means the same at
another. Each rule is kept only when it improves the monitored metric on the validation images
by more than `MIN_GAIN`: a rule that merely fits the noise of one validation set is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np

FOREGROUND = 1

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
# shares of an image's pixels: 1e-3 is 10 px of a 101x101 image, 1000 px of a 1000x1000 one
COMPONENT_SHARES = (0.0, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
EMPTY_SHARES = (0.0, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 4e-2)
MIN_GAIN = 1e-3


@dataclass(frozen=True)
class PostProcessing:
    """What is done to a two-class prediction after the model: foreground where its
    probability is above `threshold`; foreground regions smaller than `min_region_share` of
    the image become background; with less foreground than `empty_below_share` of the image
    the whole image is background."""

    threshold: float = 0.5
    min_region_share: float = 0.0
    empty_below_share: float = 0.0

    def decide(self, foreground: np.ndarray) -> np.ndarray:
        """The uint8 mask of one image from its (H, W) foreground probabilities."""
        return self.clean((foreground > self.threshold).astype(np.uint8))

    def clean(self, mask: np.ndarray) -> np.ndarray:
        """`mask` (H, W uint8, 1 = foreground) with the region and empty-image rules applied."""
        if self.min_region_share > 0:
            mask = _drop_small_regions(mask, self.min_region_share * mask.size)
        too_little = np.count_nonzero(mask) < self.empty_below_share * mask.size
        if self.empty_below_share > 0 and too_little:
            mask = np.zeros_like(mask)
        return mask

    @property
    def cleans(self) -> bool:
        return self.min_region_share > 0 or self.empty_below_share > 0

    def describe(self) -> str:
        parts = [f"threshold {self.threshold:g}"]
        if self.min_region_share:
            parts.append(f"regions under {self.min_region_share:.2%} of the image dropped")
        if self.empty_below_share:
            parts.append(f"empty below {self.empty_below_share:.2%} foreground")
        return ", ".join(parts)

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostProcessing:
        return cls(
            threshold=float(data["threshold"]),
            min_region_share=float(data.get("min_region_share", 0.0)),
            empty_below_share=float(data.get("empty_below_share", 0.0)),
        )


def _drop_small_regions(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_pixels
    small[0] = False  # label 0 is the background around the regions
    if not small[1:].any():
        return mask
    return np.where(small[labels], 0, mask).astype(np.uint8)


@dataclass(frozen=True)
class Choice:
    """The post-processing chosen, and the monitored metric before and after it."""

    rules: PostProcessing
    before: float
    after: float


Score = Callable[[Sequence[np.ndarray]], float]


def choose_post_processing(
    foregrounds: Sequence[np.ndarray],
    score: Score,
    *,
    threshold: float = 0.5,
    maximize: bool = True,
) -> Choice:
    """The rules that best improve `score` (the monitored metric of a list of predicted masks,
    in the order of `foregrounds`) over plain `threshold`, one rule at a time: the threshold,
    then the smallest region, then the empty-image share. `foregrounds` are (H, W) foreground
    probabilities of the validation images at their own size."""
    sign = 1.0 if maximize else -1.0

    def value(rules: PostProcessing) -> float:
        return sign * score([rules.decide(f) for f in foregrounds])

    best = PostProcessing(threshold=threshold)
    before = best_value = value(best)
    for field, candidates in (
        ("threshold", THRESHOLDS),
        ("min_region_share", COMPONENT_SHARES),
        ("empty_below_share", EMPTY_SHARES),
    ):
        tried = [replace(best, **{field: c}) for c in candidates if c != getattr(best, field)]
        if not tried:
            continue
        values = [value(rules) for rules in tried]
        top = int(np.argmax(values))
        if values[top] > best_value + MIN_GAIN:
            best, best_value = tried[top], values[top]
    return Choice(best, sign * before, sign * best_value)
