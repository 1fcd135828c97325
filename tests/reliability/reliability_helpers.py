"""Pieces the reliability tests share: hostile inputs, tiny data, a runner, tree snapshots."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

TINY = 24  # side of generated images: small enough that every command takes well under a second

# Arguments that make `segcli train --plugin shapes-unet` tiny (a few hundred parameters).
TINY_TRAIN = [
    "--set", "train.workers=0",
    "--set", "train.batch_size=2",
    "--set", "input.size=[16,16]",
    "--set", "model.base_width=2",
    "--set", "model.depth=1",
    "--set", 'runs_dir="runs"',
]  # fmt: skip


# ------------------------------------------------------------------------ tiny generated data


def shape_pair(seed: int, size: int = TINY) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, 0/255 mask) of one bright rectangle on noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    top, left = rng.integers(2, size // 2, 2)
    mask[top : top + size // 3, left : left + size // 3] = 255
    image[mask > 0] = (200, 180, 40)
    return image, mask


def write_raw_folder(root: Path, count: int, size: int = TINY) -> tuple[Path, Path]:
    """raw/images/sNNN.png and raw/masks/sNNN.png, `count` pairs; returns both folders."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for index in range(count):
        image, mask = shape_pair(index, size)
        Image.fromarray(image).save(images / f"s{index:03d}.png")
        Image.fromarray(mask).save(masks / f"s{index:03d}.png")
    return images, masks


# ------------------------------------------------------------------------------ hostile images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A well-formed PNG whose header claims `width` x `height` but whose data is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def image_bytes(kind: str, seed: int = 0, size: int = TINY) -> tuple[str, bytes]:
    """(file suffix, content) of one hostile or unusual image `kind` (see IMAGE_KINDS)."""
    rgb, _ = shape_pair(seed, size)
    if kind == "zero-byte":
        return ".png", b""
    if kind == "truncated-png":
        return ".png", _encoded(rgb, "PNG")[:60]
    if kind == "truncated-jpeg":
        return ".jpg", _encoded(rgb, "JPEG")[:300]
    if kind == "text-as-png":
        return ".png", b"this is a note, not a picture\n"
    if kind == "bomb-header":
        return ".png", bomb_png()
    if kind == "png-16bit":
        import cv2

        ok, encoded = cv2.imencode(".png", rgb.astype(np.uint16) * 257)
        assert ok
        return ".png", encoded.tobytes()
    if kind == "png-palette":
        return ".png", _encoded_image(Image.fromarray(rgb).quantize(16), "PNG")
    if kind == "jpeg-cmyk":
        return ".jpg", _encoded_image(Image.fromarray(rgb).convert("CMYK"), "JPEG")
    if kind in ("webp-exif-type", "webp-exif-struct"):
        # An EXIF entry re-labelled as a numeric tag while it holds text: Pillow fails with
        # TypeError (YResolution, 0x011B) or struct.error (ExtraSamples, 0x0152) on it.
        tag = 0x011B if kind == "webp-exif-type" else 0x0152
        return ".webp", _encoded(rgb, "WEBP", exif=_exif_with_text_as(tag))
    if kind == "tiff-bad-tag":
        return ".tif", _tiff_with_text_as(_encoded(rgb, "TIFF", tiffinfo={270: "a note"}), 273)
    raise ValueError(kind)


def _exif_with_text_as(tag: int) -> bytes:
    """EXIF (rotated a quarter turn) whose first entry, a text, claims to be `tag`."""
    exif = Image.Exif()
    exif[0x010E] = "a description"  # ImageDescription, ASCII: the first entry of the IFD
    exif[0x0112] = 6
    blob = bytearray(exif.tobytes())
    first_entry = 6 + 8 + 2  # after "Exif\0\0", the TIFF header and the entry count
    assert blob[first_entry : first_entry + 2] == b"\x01\x0e"
    blob[first_entry : first_entry + 2] = struct.pack(">H", tag)
    return bytes(blob)


def _tiff_with_text_as(tiff: bytes, tag: int) -> bytes:
    """A little-endian TIFF whose ImageDescription entry (270) claims to be `tag`."""
    data = bytearray(tiff)
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack("<H", data[entry : entry + 2]) == (270,):
            data[entry : entry + 2] = struct.pack("<H", tag)
            return bytes(data)
    raise AssertionError("no ImageDescription entry to damage")


def _encoded_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


BAD_IMAGES = [
    "zero-byte",
    "truncated-png",
    "truncated-jpeg",
    "text-as-png",
    "bomb-header",
    "webp-exif-struct",
    "tiff-bad-tag",
]
ODD_BUT_VALID_IMAGES = ["png-16bit", "png-palette", "jpeg-cmyk"]
IMAGE_KINDS = BAD_IMAGES + ODD_BUT_VALID_IMAGES


# ------------------------------------------------------------------------- output and trees


def check_error_output(stderr: str) -> str:
    """Exactly one `error:` line, the last one, no traceback; others are warnings or details."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"want one last error line: {stderr!r}"
    for line in lines[:-1]:
        assert line.startswith(("warning: ", "  ")), f"unexpected stderr line {line!r}:\n{stderr}"
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) -> sha256 of its content; folders -> '/'."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_dir():
            found[relative + "/"] = "/"
        else:
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def temporaries(root: Path) -> list[str]:
    """Temporary files or folders under `root`: hidden names with `.tmp` in them."""
    return sorted(
        str(p.relative_to(root))
        for p in Path(root).rglob(".*")
        if ".tmp" in p.name
        and not any(q.name.startswith(".") for q in p.relative_to(root).parents if q.name)
    )


def visible(tree: dict[str, str]) -> dict[str, str]:
    """A snapshot without hidden entries (temporary files, segcli's own bookkeeping)."""
    return {k: v for k, v in tree.items() if not any(p.startswith(".") for p in k.split("/"))}


# --------------------------------------------------------------------------------- running


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def child_env() -> dict[str, str]:
    """The environment of a segcli child process: no debug mode, no colours, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGCLI_")}
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="200", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_segcli(*args: str | Path, cwd: Path, timeout: float = 120, **popen) -> Result:
    """`python -m segcli ARGS` in a child process, to its end."""
    done = subprocess.run(
        [sys.executable, "-m", "segcli", *map(str, args)],
        cwd=cwd,
        env=popen.pop("env", None) or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )
    return Result(done.returncode, done.stdout, done.stderr)
