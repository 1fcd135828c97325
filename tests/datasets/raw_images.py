"""Plain helpers that draw raw images and masks (a module with its own name: every test
folder has a conftest.py, so `from conftest import ...` depends on which was imported first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def save(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def noise(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def blob(height: int, width: int, seed: int) -> np.ndarray:
    """A boolean disc somewhere in the image: a plausible foreground region."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    return (y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) // 3) ** 2


def rle(mask: np.ndarray) -> str:
    """Kaggle run-length encoding: column-major, 1-based `start length` pairs."""
    flat = np.concatenate([[0], mask.flatten(order="F").astype(np.int8), [0]])
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends, strict=True))


def folder_pairs(
    tmp_path: Path,
    masks: list[np.ndarray],
    *,
    suffix: str = ".png",
    mask_suffix: str = "",
    **save_options,
) -> tuple[Path, Path]:
    """images/NAME.png and masks/NAME<mask_suffix><suffix> for each mask given."""
    images, mask_dir = tmp_path / "images", tmp_path / "masks"
    for i, mask in enumerate(masks):
        height, width = np.asarray(mask).shape[:2]
        save(images / f"img{i}.png", noise(height, width, i))
        target = mask_dir / f"img{i}{mask_suffix}{suffix}"
        if isinstance(mask, Image.Image):
            target.parent.mkdir(parents=True, exist_ok=True)
            mask.save(target, **save_options)
        else:
            save(target, mask, **save_options)
    return images, mask_dir
