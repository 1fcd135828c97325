"""Decoding images and masks: one rule for every reader, with errors that name the file.

Every image segcli reads goes through `decode_image` (or `read_image`, `read_mask`): a
header over the pixel limit (`max_image_pixels`) is refused before anything is decoded, so
a decompression bomb is a `DataError`, not an exhausted machine.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from segcli.errors import ConfigError, DataError, ResourceError, SegcliError

# 150 megapixels: 2.3 times the 8000 x 8000 slides `predict --tile` is measured on
# (docs/predict.md), while a 15000 x 15000 header (225 Mpx, 675 MB decoded RGB, several
# times that in transient copies) is refused before anything is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_PIXELS_VARIABLE = "SEGCLI_MAX_IMAGE_PIXELS"


def max_image_pixels(requested: int | None = None) -> int:
    """The largest image segcli decodes: `requested` (--max-image-pixels), else the
    SEGCLI_MAX_IMAGE_PIXELS environment variable, else DEFAULT_MAX_IMAGE_PIXELS."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--max-image-pixels {requested} must be at least 1")
        return requested
    text = os.environ.get(MAX_IMAGE_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(text)) if "e" in text.lower() else int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{MAX_IMAGE_PIXELS_VARIABLE}={text!r} is not a positive number of pixels",
            hint=f"e.g. {MAX_IMAGE_PIXELS_VARIABLE}=300000000, or unset it for the default "
            f"{DEFAULT_MAX_IMAGE_PIXELS}",
        )
    return value


def _too_large(path: Path | str, limit: int, size: tuple[int, int] | None = None) -> DataError:
    described = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "larger"
    return DataError(
        f"image {path} is {described}, over the limit of {limit:,} pixels "
        "that guards against decompression bombs",
        hint=f"for a genuine image this large, raise the limit: {MAX_IMAGE_PIXELS_VARIABLE}=N "
        "or, for predict and evaluate, --max-image-pixels N",
    )


# Pillow's bomb check reads one module-wide setting, Image.MAX_IMAGE_PIXELS, which threads
# reading images at once with different limits (the fingerprint, decode_all) would overwrite
# under each other. segcli's reads keep their limit per thread instead, and Pillow's check,
# wherever a format runs it (the header, GIF and ICO frames, TIFF tiles), consults that; a read
# by other code keeps Pillow's own rule. Replaced once, here, never per read.
_read_limit = threading.local()
_NOT_SEGCLIS = object()  # the limit of a thread outside segcli's reads
_pillow_bomb_check = Image._decompression_bomb_check


def _bomb_check(size: tuple[int, int], *args: Any, **kwargs: Any) -> None:
    limit = getattr(_read_limit, "pixels", _NOT_SEGCLIS)
    if limit is _NOT_SEGCLIS:
        _pillow_bomb_check(size, *args, **kwargs)
    elif limit is not None and max(1, size[0]) * max(1, size[1]) > limit:
        raise Image.DecompressionBombError(f"{size[0]}x{size[1]} is over {limit} pixels")


Image._decompression_bomb_check = _bomb_check
# Pillow's UserWarnings about damaged metadata ("Corrupt EXIF data") are dropped: the image
# still decodes, and a Python warning would break the one-line output. A filter set once, as
# warnings.catch_warnings around each read would swap the process's filters under other threads.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


@contextmanager
def _pil_pixel_limit(limit: int | None) -> Iterator[None]:
    """Pillow's bomb check set to `limit` (None: off) for the reads of this thread in the block:
    segcli's limit is the one that counts, in both directions, whatever Image.MAX_IMAGE_PIXELS
    says, and other threads keep theirs."""
    previous = getattr(_read_limit, "pixels", _NOT_SEGCLIS)
    _read_limit.pixels = limit
    try:
        yield
    finally:
        _read_limit.pixels = previous


@contextmanager
def _decoding(path: Path | str, limit: int) -> Iterator[None]:
    """Every way reading the image `path` can fail, as the segcli error that names it.

    Pillow's parsers fail on a damaged header, EXIF block or TIFF tag with whatever the bad
    bytes make them hit (struct.error, TypeError, IndexError, ZeroDivisionError, EOFError,
    SyntaxError, ...), not only OSError: any exception is an unreadable image."""
    try:
        yield
    except SegcliError:
        raise
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Image.DecompressionBombError:
        raise _too_large(path, limit) from None
    except MemoryError:
        raise ResourceError(
            f"out of memory decoding image {path}",
            hint="free memory, or lower --max-image-pixels to skip images this large",
        ) from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise _unreadable(path, exc) from None


def open_image(path: Path, max_pixels: int | None = None, *, page: int = 0) -> Image.Image:
    """Open and fully decode an image file (EXIF orientation applied), keeping the values it
    stores (a 16-bit mask keeps its labels); `decode_image` applies the rule for pixels.
    `page` picks a page of a multi-page file (a TIFF volume's slice, see `page_count`).

    The size in the file's header is checked against `max_image_pixels(max_pixels)` before
    any pixel is decoded, so a small file claiming a huge image is refused cheaply. Any
    failure to decode is a DataError naming the file (and the page)."""
    return _decode(path, max_pixels, eight_bit=False, page=page)


def decode_image(
    path: Path, max_pixels: int | None = None, mode: str | None = None, *, page: int = 0
) -> Image.Image:
    """An image file as 8 bits per channel, by segcli's one rule for bit depths and float
    images (`to_uint8`), converted to Pillow `mode` ("L", "RGB") if given. Training,
    prediction, evaluation, prepare and the fingerprint all read images through it."""
    return _decode(path, max_pixels, eight_bit=True, mode=mode, page=page)


def page_count(path: Path) -> int:
    """How many pages a multi-page image file (a TIFF volume) holds, 1 for other images; a
    damaged chain of pages is a DataError naming the file."""
    with _decoding(path, max_image_pixels()), _pil_pixel_limit(None), Image.open(path) as image:
        return getattr(image, "n_frames", 1)


def _decode(
    path: Path, max_pixels: int | None, *, eight_bit: bool, mode: str | None = None, page: int = 0
) -> Image.Image:
    limit = max_image_pixels(max_pixels)
    source = f"{path} page {page}" if page else path  # how messages name what was read
    with _decoding(source, limit), _pil_pixel_limit(None), Image.open(path) as image:
        if page:
            image.seek(page)
        if image.size[0] * image.size[1] > limit:
            raise _too_large(source, limit, image.size)
        with _pil_pixel_limit(limit):  # frames (GIF, ICO) are checked again as they load
            image.load()
            stored_range = _stored_range(image)  # the transposed copy has no TIFF tags
            decoded = ImageOps.exif_transpose(image)
        if eight_bit and (decoded.mode in ("I", "F") or decoded.mode.startswith("I;16")):
            decoded = Image.fromarray(to_uint8(np.asarray(decoded), source, stored_range))
        return decoded.convert(mode) if mode else decoded


def _unreadable(path: Path | str, exc: BaseException) -> DataError:
    detail = str(exc).strip() or type(exc).__name__
    return DataError(
        f"cannot read image {path}: {detail}",
        hint="the file is corrupt or not an image; replace or remove it",
    )


def _stored_range(image: Image.Image) -> tuple[int, int] | None:
    """(lowest, highest) value of the integer type a single-channel image of more than 8 bits
    is stored in; None for other images. Pillow keeps 16-bit data as I;16, and widens 16-bit
    signed and 32-bit TIFF samples, 16-bit PGM and (in older versions) 16-bit PNG to its
    32-bit mode I: a TIFF names its sample type in its tags, the others hold 16 bits."""
    if image.mode.startswith("I;16"):
        return (-(2**15), 2**15 - 1) if image.mode.endswith("S") else (0, 2**16 - 1)
    if image.mode != "I":
        return None
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return 0, 2**16 - 1
    bits, sample_format = (
        value[0] if isinstance(value, tuple) else value
        for value in (tags.get(258, 32), tags.get(339, 1))
    )
    bits = 16 if bits == 16 else 32  # Pillow's mode I holds no other TIFF samples
    if sample_format == 2:  # signed
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def to_uint8(
    array: np.ndarray, source: Path | str, stored_range: tuple[int, int] | None = None
) -> np.ndarray:
    """Pixel data of any type as uint8, by the one rule (docs/dataset-format.md, "Pixel
    values"), each pixel on its own: what the other pixels of the image hold never matters.

    - uint8 as it is; bool: 0 and 255;
    - integers: their type's full range (`stored_range`, else the dtype's) scaled linearly
      to 0..255, so uint16 is value / 65535 * 255 (exactly the inverse of value * 257);
    - floats: finite and within [0, 1], taken as 0..1 (scaled by 255); else within
      [0, 255], taken as 0..255. NaN, infinity, negative values or values above 255 are a
      DataError naming `source`: no range could be guessed without stretching each image.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        low, high = stored_range or (info.min, info.max)
        if array.dtype.itemsize == 4 and low == 0 and high > info.max:
            array = array.view(np.uint32)  # unsigned 32-bit samples, widened to Pillow's int32
        exact = np.float32 if high - low <= 2**16 else np.float64
        scaled = (array.astype(exact) - exact(low)) * exact(255 / (high - low))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"image {source} has pixels of type {array.dtype}")
    fix = "save it with values in 0..1 or 0..255, or as an 8- or 16-bit integer image"
    if not np.isfinite(array).all():
        raise DataError(f"image {source} holds NaN or infinite pixel values", hint=fix)
    low, high = float(array.min(initial=0)), float(array.max(initial=0))
    if low < 0 or high > 255:
        raise DataError(
            f"float image {source} holds values from {low:g} to {high:g}; float images must "
            "hold 0..1 or 0..255",
            hint=fix,
        )
    scale = 255.0 if high <= 1 else 1.0
    return np.rint(array.astype(np.float32) * np.float32(scale)).astype(np.uint8)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding a pixel."""
    with _decoding(path, max_image_pixels()), _pil_pixel_limit(None), Image.open(path) as image:
        return image.size


def read_image(path: Path, channels: int = 3, max_pixels: int | None = None) -> np.ndarray:
    """An image as uint8 ``(H, W, channels)`` by the one rule (`decode_image`); grey is
    expanded to RGB or RGB reduced to grey."""
    if channels == 1:
        return np.array(decode_image(path, max_pixels, "L"))[:, :, None]
    return np.array(decode_image(path, max_pixels, "RGB"))


def read_mask(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """A prepared mask as uint8 ``(H, W)``."""
    image = open_image(path, max_pixels)
    if image.mode not in ("L", "P"):
        raise DataError(
            f"mask {path} has mode {image.mode}; prepared masks are 8-bit single-channel"
        )
    return np.array(image)
