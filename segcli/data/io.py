"""Reading and writing images and masks, with errors that name the file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segcli.errors import DataError, OutputError


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"cannot read image {path}: {exc}".rstrip(),
            hint="the file is corrupt or not an image; replace or remove it",
        ) from None


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float pixel data to uint8 the same way everywhere (training and predict)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype in (np.uint16, np.int32, np.uint32, np.int64):
        top = 65535 if array.max(initial=0) > 255 else 255
        return (array.astype(np.float32) * (255.0 / top)).round().astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return np.clip(array.astype(np.float32) * 255.0, 0, 255).round().astype(np.uint8)


def read_image(path: Path, channels: int = 3) -> np.ndarray:
    """An image as uint8 ``(H, W, channels)``; grey is expanded to RGB or RGB reduced to grey."""
    image = open_image(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = to_uint8(np.asarray(image))
        image = Image.fromarray(array)
    if channels == 1:
        return np.array(image.convert("L"))[:, :, None]
    return np.array(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """A prepared mask as uint8 ``(H, W)``."""
    image = open_image(path)
    if image.mode not in ("L", "P"):
        raise DataError(
            f"mask {path} has mode {image.mode}; prepared masks are 8-bit single-channel"
        )
    return np.array(image)


def publish_file(temporary: Path | str, path: Path | str) -> None:
    """Rename a finished temporary file over `path`, with the permissions open() would give
    it (mkstemp makes files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


@contextmanager
def atomic_write(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary stream whose contents replace `path` only once the block succeeds.

    The data goes to a temporary file in the same folder, renamed over `path` at the end,
    so a reader (or a crash at any moment) never sees half a file. `durable` also flushes
    it to disk before the rename (checkpoints).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        publish_file(temporary, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_png_atomic(path: Path, array: np.ndarray) -> None:
    """Write an array as a PNG file, atomically."""
    with atomic_write(path) as stream:
        Image.fromarray(array).save(stream, format="PNG")
