"""Post-processing of a two-class (foreground/background) prediction, as a checkpoint records
it: the probability threshold, the smallest connected foreground region kept, and "an image
with less foreground than this is empty" (TGS's score rewards an empty answer on an empty image
as much as a perfect mask on a full one). Sizes are shares of the image's pixels, so rules
chosen at one resolution mean the same at another. `segcli.evaluation.postprocess_search`
chooses them on validation predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


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
