"""Sliding-window inference whose memory is bounded by the tile size, not the image size.

Windows are visited in raster order, one row of windows at a time. Each window's class
probabilities are multiplied by a Gaussian weight (high in the centre, where the model
sees the most context, near zero at the borders) and added into a *band* accumulator that
is only one window high and one image wide, together with the sum of the weights. Once a
row of windows is done, every image row above the next row of windows can receive no more
contributions: those rows are divided by their weight sum, handed to `emit` (which turns
them into mask rows, confidence rows, ...) and the band shifts down.

So an 8000x8000 image with 4 classes and 512-pixel tiles holds 4 x 512 x 8000 float32
probabilities (65 MB) instead of 4 x 8000 x 8000 (1 GiB), and the blending is exact:
the result equals what a full-image accumulator would give.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from segcli.errors import UsageError

# nnU-Net's choice: sigma = 1/8 of the window, so borders get about exp(-8) of the centre
SIGMA_FRACTION = 0.125
# keeps image borders (covered only by window borders) well above float32 underflow
MIN_WEIGHT = 1e-4
# fraction of each window shared with its neighbours when --overlap is not given
DEFAULT_OVERLAP = 0.25


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Offsets along one axis: `overlap` of each window shared, the last flush with the end."""
    if length <= window:
        return [0]
    stride = max(1, round(window * (1 - overlap)))
    return list(range(0, length - window, stride)) + [length - window]


def gaussian_window(height: int, width: int) -> torch.Tensor:
    """(height, width) weights, 1 in the centre, falling off with sigma = window / 8."""

    def axis(size: int) -> torch.Tensor:
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        return torch.exp(-0.5 * (coords / (SIGMA_FRACTION * size)) ** 2)

    weight = axis(height)[:, None] * axis(width)[None, :]
    return (weight / weight.max()).clamp_(min=MIN_WEIGHT)


def tiling_options(tile: int | None, overlap: float | None) -> tuple[int | None, float]:
    """Checked (tile, overlap) of a command: no tile means whole images, and then an overlap
    has no meaning and is refused rather than silently ignored."""
    if tile is None:
        if overlap is not None:
            raise UsageError(
                f"--overlap {overlap} applies to sliding windows only",
                hint="add --tile SIZE (at least 8 pixels, typically 256-1024), "
                "or leave --overlap out",
            )
        return None, DEFAULT_OVERLAP
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    check_tiling(tile, overlap)
    return tile, overlap


def check_tiling(tile: int, overlap: float) -> None:
    if tile < 8:
        raise UsageError(
            f"--tile {tile} is too small; use at least 8 pixels (typically 256-1024), "
            "or leave --tile out to predict whole images"
        )
    if not 0 <= overlap < 1:
        raise UsageError(f"--overlap {overlap} must be at least 0 and below 1 (typically 0.25-0.5)")


def count_windows(height: int, width: int, tile: int, overlap: float) -> int:
    return len(window_starts(height, tile, overlap)) * len(window_starts(width, tile, overlap))


def sliding_window(
    image: np.ndarray,
    window_probabilities: Callable[[list[np.ndarray]], torch.Tensor],
    num_classes: int,
    emit: Callable[[int, torch.Tensor], None],
    *,
    tile: int,
    overlap: float,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Blend window probabilities over `image` (H, W, C) and `emit(top, probabilities)`.

    `window_probabilities` maps a list of image windows to (N, K, h, w) float32 CPU
    probabilities; at most `batch_size` windows are in flight. `emit` receives consecutive
    horizontal strips (K, rows, W) from top to bottom that together cover the image once.
    """
    check_tiling(tile, overlap)
    height, width = image.shape[:2]
    tile_h, tile_w = min(tile, height), min(tile, width)
    tops, lefts = window_starts(height, tile_h, overlap), window_starts(width, tile_w, overlap)
    weight = gaussian_window(tile_h, tile_w)
    band = torch.zeros(num_classes, tile_h, width)
    band_weight = torch.zeros(tile_h, width)
    for row, top in enumerate(tops):
        for first in range(0, len(lefts), batch_size):
            chunk = lefts[first : first + batch_size]
            windows = [image[top : top + tile_h, left : left + tile_w] for left in chunk]
            probabilities = window_probabilities(windows)
            for left, window in zip(chunk, probabilities, strict=True):
                band[:, :, left : left + tile_w].addcmul_(window, weight)
                band_weight[:, left : left + tile_w] += weight
        next_top = tops[row + 1] if row + 1 < len(tops) else top + tile_h
        finished = next_top - top
        emit(top, band[:, :finished] / band_weight[:finished])
        band = torch.cat([band[:, finished:], torch.zeros(num_classes, finished, width)], 1)
        band_weight = torch.cat([band_weight[finished:], torch.zeros(finished, width)], 0)
        if progress:
            progress(1 / len(tops))
