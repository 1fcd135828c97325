"""Pictures for people: sample grids with class legends (Pillow only, no display needed)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segcli.data.format import ClassInfo, read_dataset_info, split_files
from segcli.data.io import read_image, read_mask
from segcli.errors import DataError, OutputError
from segcli.palette import colorize

_MARGIN = 8


def _font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def legend(classes: Sequence[ClassInfo], width: int) -> Image.Image:
    """Colour swatches with class names, wrapped to `width`."""
    font = _font()
    box, gap = 14, 12
    entries = [(c.color, f"{c.id} {c.name}") for c in classes]
    lines, line, used = [], [], 0
    for color, text in entries:
        item_width = box + 4 + int(font.getlength(text)) + gap
        if line and used + item_width > width - 2 * _MARGIN:
            lines.append(line)
            line, used = [], 0
        line.append((color, text))
        used += item_width
    lines.append(line)
    picture = Image.new("RGB", (width, len(lines) * (box + 6) + _MARGIN), "white")
    draw = ImageDraw.Draw(picture)
    for row, items in enumerate(lines):
        x, y = _MARGIN, _MARGIN // 2 + row * (box + 6)
        for color, text in items:
            draw.rectangle([x, y, x + box, y + box], fill=tuple(color), outline=(90, 90, 90))
            draw.text((x + box + 4, y), text, fill="black", font=font)
            x += box + 4 + int(font.getlength(text)) + gap
    return picture


def grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], cell: int = 192) -> Image.Image:
    """Rows of equally sized cells (each picture scaled to fit `cell`), with column titles."""
    columns = len(titles)
    font = _font()
    header = 22
    picture = Image.new("RGB", (columns * (cell + _MARGIN) + _MARGIN, header + len(rows) * (cell + _MARGIN)), "white")
    draw = ImageDraw.Draw(picture)
    for column, title in enumerate(titles):
        draw.text((_MARGIN + column * (cell + _MARGIN), 4), title, fill="black", font=font)
    for row_index, row in enumerate(rows):
        for column, array in enumerate(row):
            image = Image.fromarray(array if array.ndim == 2 or array.shape[2] == 3 else array[:, :, 0])
            image.thumbnail((cell, cell), Image.Resampling.NEAREST)
            x = _MARGIN + column * (cell + _MARGIN) + (cell - image.width) // 2
            y = header + row_index * (cell + _MARGIN) + (cell - image.height) // 2
            picture.paste(image.convert("RGB"), (x, y))
    return picture


def stack_vertically(*pictures: Image.Image) -> Image.Image:
    width = max(p.width for p in pictures)
    result = Image.new("RGB", (width, sum(p.height for p in pictures)), "white")
    y = 0
    for p in pictures:
        result.paste(p, (0, y))
        y += p.height
    return result


def save_picture(picture: Image.Image, path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            picture.save(stream, format="PNG")
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def sample_grid(dataset_dir: Path, split: str | None = None, count: int = 8, seed: int = 0) -> Image.Image:
    """Random labelled samples of a prepared dataset: image | colour mask, and a legend."""
    info = read_dataset_info(dataset_dir)
    split = split or (info.labelled_splits[0] if info.labelled_splits else next(iter(info.splits)))
    pairs = [(i, m) for i, m in split_files(dataset_dir, split) if m is not None]
    if not pairs:
        raise DataError(f"split {split!r} of {dataset_dir} has no labelled samples")
    chosen = np.random.default_rng(seed).permutation(len(pairs))[:count]
    rows = []
    for index in sorted(chosen):
        image_path, mask_path = pairs[index]
        image = read_image(image_path, 3)
        rows.append([image, colorize(read_mask(mask_path), info.palette)])
    picture = grid(rows, ["image", "mask"])
    return stack_vertically(picture, legend(info.classes, picture.width))
