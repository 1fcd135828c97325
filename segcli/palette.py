"""Class colours: turning index masks into colour images and legends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE_COLOR = (255, 255, 255)


def lookup_table(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A 256x3 uint8 table: class i -> palette[i]; ignore (255) -> white; unused -> grey."""
    table = np.full((256, 3), 128, np.uint8)
    for index, color in enumerate(palette[:255]):
        table[index] = color
    table[255] = IGNORE_COLOR
    return table


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    return lookup_table(palette)[mask]


def overlay(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """The image blended with its colour mask; background (class 0) is left untouched."""
    colors = colorize(mask, palette).astype(np.float32)
    rgb = (
        image
        if image.ndim == 3 and image.shape[2] == 3
        else np.repeat(image.reshape(*mask.shape, 1), 3, 2)
    )
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colors
    keep = (mask == 0)[..., None]
    return np.where(keep, rgb, blended).round().astype(np.uint8)


def default_palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct colours for datasets that bring none (class 0 black)."""
    base = [
        (0, 0, 0),
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (220, 190, 255),
        (170, 110, 40),
        (255, 250, 200),
        (128, 0, 0),
        (170, 255, 195),
        (128, 128, 0),
        (255, 215, 180),
        (0, 0, 128),
        (128, 128, 128),
    ]
    colors = list(base[:count])
    rng = np.random.default_rng(0)
    while len(colors) < count:
        colors.append(tuple(int(v) for v in rng.integers(0, 256, 3)))
    return colors
