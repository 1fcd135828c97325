"""Deterministic generation of the `shapes` dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import cv2
import numpy as np

from segcli import ClassInfo, DatasetPlan, Sample, UsageError

CLASSES = [
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "circle", (230, 25, 75)),
    ClassInfo(2, "rectangle", (60, 180, 75)),
    ClassInfo(3, "triangle", (0, 130, 200)),
]


def prepare(
    raw: Path | None,
    *,
    train: Annotated[int, "number of training images"] = 320,
    val: Annotated[int, "number of validation images"] = 80,
    test: Annotated[int, "number of unlabelled test images"] = 0,
    size: Annotated[int, "image side in pixels"] = 128,
    seed: Annotated[int, "random seed: the same seed gives the same images"] = 0,
) -> DatasetPlan:
    """Generate random coloured shapes on textured backgrounds (no raw folder needed)."""
    if min(train, val, test) < 0 or train + val + test == 0:
        raise UsageError("shapes needs at least one image and no negative counts")
    if not 32 <= size <= 2048:
        raise UsageError(f"--size {size} is out of range; use 32..2048")
    samples = []
    for split, count in (("train", train), ("val", val), ("test", test)):
        for index in range(count):
            meta = {"seed": seed, "index": index, "size": size}
            mask = None if split == "test" else "generated"
            samples.append(Sample(split, f"{split}_{index:05d}", None, mask, meta))
    return DatasetPlan(
        name="shapes",
        classes=CLASSES,
        samples=samples,
        read_image=read_image,
        read_mask=read_mask,
        notes=[f"generated {train}/{val}/{test} images of {size}x{size} from seed {seed}"],
    )


prepare.needs_raw = False  # type: ignore[attr-defined]


def read_image(sample: Sample) -> np.ndarray:
    return render(sample)[0]


def read_mask(sample: Sample) -> np.ndarray:
    return render(sample)[1]


def render(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask of one sample; a pure function of (seed, split, index, size)."""
    size = sample.meta["size"]
    split_number = {"train": 0, "val": 1, "test": 2}[sample.split]
    rng = np.random.default_rng([sample.meta["seed"], split_number, sample.meta["index"]])
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 5)):
        kind = int(rng.integers(1, 4))
        color = _tint(rng, kind)
        shape = np.zeros_like(mask)
        _draw(shape, kind, rng, size)
        image[shape > 0] = color
        mask[shape > 0] = kind
    noise = rng.normal(0, 6, image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, mask


# Each class leans to its own hue, jittered widely: a small model learns the task in
# minutes on a CPU, and where a background patch has the same hue, shape must decide.
_HUES = {1: (200, 60, 60), 2: (60, 190, 70), 3: (60, 90, 210)}


def _tint(rng: np.random.Generator, kind: int) -> tuple[int, int, int]:
    jitter = rng.integers(-55, 56, 3)
    return tuple(int(v) for v in np.clip(np.array(_HUES[kind]) + jitter, 0, 255))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # muted (half-way to grey) so that the tinted shapes stand out from most backgrounds
    smooth = 0.5 * smooth + 0.5 * smooth.mean(axis=2, keepdims=True)
    stripes = np.sin(np.arange(size) / rng.uniform(2, 8))[None, :, None] * rng.uniform(0, 25)
    return np.clip(smooth + stripes, 0, 255).astype(np.uint8)


def _draw(canvas: np.ndarray, kind: int, rng: np.random.Generator, size: int) -> None:
    radius = int(rng.integers(size // 12, size // 4))
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
    if kind == 1:
        cv2.circle(canvas, (cx, cy), radius, 1, thickness=-1)
    elif kind == 2:
        half_w, half_h = int(radius * rng.uniform(0.6, 1.2)), int(radius * rng.uniform(0.6, 1.2))
        angle = float(rng.uniform(0, 90))
        corners = cv2.boxPoints(((cx, cy), (2 * half_w, 2 * half_h), angle))
        cv2.fillPoly(canvas, [corners.astype(np.int32)], 1)
    else:
        radius = min(int(radius * 1.3), cx, cy, size - cx, size - cy)  # area like the others
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        angles += rng.uniform(-0.3, 0.3, 3)
        points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [points.astype(np.int32)], 1)
