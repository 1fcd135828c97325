"""Reading and writing images and masks, with errors that name the file.

Each output file (a mask, a picture, a checkpoint, a report) goes to a short temporary
name in the destination folder and is renamed into place once complete, so no reader ever
sees half a file. Running out of disk space is a `ResourceError` (the machine, not the
output location, is at fault).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from segcli.errors import (
    ConfigError,
    DataError,
    OutputError,
    ResourceError,
    SegcliError,
    UsageError,
)

# 150 megapixels: 2.3 times the 8000 x 8000 slides `predict --tile` is measured on
# (docs/predict.md), while a 15000 x 15000 header (225 Mpx, 675 MB decoded RGB, several
# times that in transient copies) is refused before anything is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_PIXELS_VARIABLE = "SEGCLI_MAX_IMAGE_PIXELS"
TEMPORARY_PREFIX = ".segcli-"
TEMPORARY_SUFFIX = ".tmp"


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


def available_memory() -> int:
    """Memory this machine can give without swapping: MemAvailable (free memory plus the
    page cache it can drop), or all physical memory where /proc/meminfo is not there."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


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


# Deeper than any file segcli reads (dataset.json, split files, checkpoint metadata: under
# 10 levels), and far enough from Python's recursion limit that every later walk over the
# value (checks, json.dumps in a message) is safe.
MAX_JSON_DEPTH = 100


def parse_json(
    text: str | bytes,
    source: str,
    error: type[SegcliError] = DataError,
    hint: str | None = None,
) -> Any:
    """The value of JSON `text` read from `source` (a path, or what it is: "the metadata of
    CKPT"). Text that is not JSON, not UTF-8 or nested deeper than MAX_JSON_DEPTH levels is
    an `error` naming `source`, never a ValueError or RecursionError."""
    too_deep = f"{source} is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise error(f"{source} is not UTF-8 text: {exc.reason}", hint=hint) from None
    except ValueError as exc:
        raise error(f"{source} is not valid JSON: {exc}", hint=hint) from None
    except RecursionError:
        raise error(too_deep, hint=hint) from None
    if _nested_deeper(value, MAX_JSON_DEPTH):
        raise error(too_deep, hint=hint)
    return value


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest more than `limit` levels (no recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            item
            for container in level
            if isinstance(container, (list, dict))
            for item in (container.values() if isinstance(container, dict) else container)
        ]
    return any(isinstance(item, (list, dict)) for item in level)


def read_json(
    path: Path,
    what: str = "",
    error: type[SegcliError] = DataError,
    hint: str | None = None,
) -> Any:
    """The JSON value in the file `path` (`what` it is, e.g. "split file", starts the
    messages); a file that cannot be read or parsed is an `error` naming it."""
    source = f"{what} {path}".strip()
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"cannot read {source}: {exc.strerror or exc}", hint=hint) from None
    return parse_json(content, source, error, hint)


# A failed write, in words that say which limit was met: (type, what, how to go on).
_NOT_KEPT = "; no partial file was kept"
WRITE_FAILURES: dict[int, tuple[type[SegcliError], str, str]] = {
    errno.ENOSPC: (
        ResourceError,
        "disk full writing {path}",
        "free space there, or write to another disk, and run again" + _NOT_KEPT,
    ),
    errno.EDQUOT: (
        ResourceError,
        "disk quota exceeded writing {path}",
        "free space within your quota (or have it raised), or write to another disk" + _NOT_KEPT,
    ),
    errno.EFBIG: (
        ResourceError,
        "file too large writing {path}: the file-size limit (ulimit -f) or the largest file "
        "the file system holds is reached",
        "raise the limit, or write to another file system" + _NOT_KEPT,
    ),
    errno.EROFS: (
        OutputError,
        "cannot write {path}: it is on a read-only file system",
        "choose an --out on a writable disk",
    ),
    errno.EACCES: (
        OutputError,
        "cannot write {path}: permission denied",
        "choose an --out you may write to, or get write permission there",
    ),
}
WRITE_FAILURES[errno.EPERM] = WRITE_FAILURES[errno.EACCES]


def write_error(path: Path | str, exc: OSError) -> SegcliError:
    """The error for a failed write: a full disk, quota or file-size limit is a ResourceError,
    anything else an OutputError, each in its own words."""
    if exc.errno in WRITE_FAILURES:
        kind, what, hint = WRITE_FAILURES[exc.errno]
        return kind(what.format(path=path), hint=hint)
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def check_writable_folder(folder: Path) -> None:
    """An OutputError, with the reason, if files cannot be created in the existing `folder`:
    a read-only file system (where `os.access` also says no) is not a permission problem."""
    if os.access(folder, os.W_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    raise write_error(folder, OSError(errno.EROFS if read_only else errno.EACCES, ""))


def temporary_file(folder: Path) -> tuple[int, Path]:
    """(open descriptor, path) of a new hidden temporary file in `folder`.

    The name is short and fixed-length, so it fits wherever the final name fits (a name
    derived from the final one would not for names near the 255-character limit), and it
    carries the writer's PID so stale ones from a killed run can be told apart."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=folder, prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-", suffix=TEMPORARY_SUFFIX
    )
    return handle, Path(name)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left in `folder` (and below) by segcli runs that were killed."""
    for candidate in Path(folder).rglob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"):
        pid = candidate.name[len(TEMPORARY_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            candidate.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_file(
    temporary: Path | str, path: Path | str, ledger: OutputLedger | None = None
) -> None:
    """Rename a finished temporary file over `path`, with the permissions open() would give
    it (mkstemp makes files readable by their owner only), recording it in `ledger`."""
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        if ledger is not None:
            ledger.record(Path(path), os.stat(temporary))
        os.replace(temporary, path)
    except OSError as exc:
        raise write_error(path, exc) from None


@contextmanager
def atomic_write(
    path: Path, *, durable: bool = False, ledger: OutputLedger | None = None
) -> Iterator[BinaryIO]:
    """A binary stream whose contents replace `path` only once the block succeeds.

    The data goes to a temporary file in the same folder, renamed over `path` at the end,
    so a reader (or a crash at any moment) never sees half a file. `durable` also flushes
    it to disk before the rename (checkpoints). `ledger` records the file as segcli's.
    """
    path = Path(path)
    try:
        handle, temporary = temporary_file(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        publish_file(temporary, path, ledger)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        temporary.unlink(missing_ok=True)


def write_png_atomic(path: Path, array: np.ndarray, ledger: OutputLedger | None = None) -> None:
    """Write an array as a PNG file, atomically."""
    with atomic_write(path, ledger=ledger) as stream:
        Image.fromarray(array).save(stream, format="PNG")


class OutputLedger:
    """The files segcli wrote below one folder, in its `.segcli-outputs.jsonl`.

    An existing file may be replaced without --force only if segcli wrote it there and it
    is unchanged since (same size and modification time), so a re-run into its own output
    folder works while a user's file, or a mask edited by hand, is never overwritten. A
    file is recorded just before it is renamed into place, and an old record is kept until
    the next run, so a crash between the two leaves both versions recognised.
    """

    NAME = ".segcli-outputs.jsonl"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.file = self.root / self.NAME
        self.records: dict[str, set[tuple[int, int]]] = {}
        try:
            lines = self.file.read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            raise OutputError(f"cannot read {self.file}: {exc}") from None
        for line in lines:
            try:
                entry = parse_json(line, str(self.file))
                key, size, mtime = entry["path"], int(entry["size"]), int(entry["mtime_ns"])
            except (DataError, ValueError, KeyError, TypeError):
                continue  # a line torn by a crash mid-append
            self.records.setdefault(key, set()).add((size, mtime))

    def _key(self, path: Path) -> str:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root)).as_posix()

    def owns(self, path: Path) -> bool:
        try:
            stat = Path(path).stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) in self.records.get(self._key(path), ())

    def record(self, path: Path, stat: os.stat_result) -> None:
        line = json.dumps(
            {"path": self._key(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
        self.records.setdefault(self._key(path), set()).add((stat.st_size, stat.st_mtime_ns))
        with open(self.file, "a", encoding="utf-8") as stream:
            stream.write(line + "\n")

    def compact(self) -> None:
        """Keep only records of files that are still there unchanged (once per run)."""
        live = []
        for key, stats in sorted(self.records.items()):
            try:
                stat = (self.root / key).stat()
            except OSError:
                continue
            if (stat.st_size, stat.st_mtime_ns) in stats:
                live.append((key, stat.st_size, stat.st_mtime_ns))
        if sum(map(len, self.records.values())) == len(live):
            return
        lines = [
            json.dumps({"path": key, "size": size, "mtime_ns": mtime}) + "\n"
            for key, size, mtime in live
        ]
        with atomic_write(self.file) as stream:
            stream.write("".join(lines).encode())
        self.records = {key: {(size, mtime)} for key, size, mtime in live}

    def open_folder(self) -> None:
        """Create the folder, clear temporaries of killed runs, and tidy the ledger: once per
        run, after the checks and before the first write."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.root, exc) from None
        check_writable_folder(self.root)
        remove_stale_temporaries(self.root)
        self.compact()

    def check_replaceable(
        self, paths: Iterable[Path], force: bool, inputs: Iterable[Path] = ()
    ) -> None:
        """The one check every writing command makes before it writes (and before any long
        work): an output that is one of the command's own `inputs` is refused even with
        `force` (UsageError); an existing output segcli did not write here, or that was
        changed since, is refused unless `force` (OutputError). `inputs` is only walked when
        an output exists."""
        existing = [Path(p) for p in paths if os.path.lexists(p)]
        if not existing:
            return
        refuse_replacing_inputs(existing, inputs)
        if force:
            return
        foreign = [p for p in existing if not self.owns(p)]
        if len(foreign) == 1:
            raise OutputError(
                f"{foreign[0]} already exists and was not written by segcli there "
                "(or was changed since)",
                hint="pass --force to replace it, or choose another --out",
            )
        if foreign:
            raise OutputError(
                f"{len(foreign)} output file(s) already exist and were not written by segcli "
                f"(or were changed since), e.g. {foreign[0]}",
                hint="pass --force to replace them, or choose another --out",
            )


def claim_outputs(
    paths: list[Path], *, inputs: Iterable[Path] = (), force: bool = False
) -> OutputLedger:
    """The ledger of the folder of `paths` (one folder), once `check_replaceable` allows them."""
    ledger = OutputLedger(Path(paths[0]).parent)
    ledger.check_replaceable(paths, force, inputs)
    return ledger


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def refuse_replacing_inputs(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """A UsageError if an existing output is one of the inputs: the same file by any name
    (a link, a `..` path, another spelling), which no --force may replace."""
    targets = {key: path for path in outputs if (key := _file_identity(path)) is not None}
    if not targets:
        return
    for source in inputs:
        output = targets.get(_file_identity(source))
        if output is not None:
            same = "" if os.path.abspath(output) == os.path.abspath(source) else f" ({source})"
            raise UsageError(
                f"output {output} is an input of this command{same}: it is never replaced, "
                "even with --force",
                hint="choose another --out",
            )


# What the commands read, and so never replace: a run folder's records and a prepared dataset.
RUN_RECORDS = (
    "config.toml",
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    "environment.json",
    "command.txt",
    "plan.json",
    "run.json",
)


def run_records(run_dir: Path) -> Iterator[Path]:
    """What `segcli train` recorded in a run folder: RUN_RECORDS and the checkpoints."""
    run_dir = Path(run_dir)
    yield from (run_dir / name for name in RUN_RECORDS)
    yield from run_dir.glob("*.safetensors")


def dataset_files(root: Path) -> Iterator[Path]:
    """A prepared dataset's files: its records (dataset.json, samples.jsonl, report.json, the
    fingerprint: every top-level JSON file) and every file of `<split>/images|masks`."""
    root = Path(root)
    yield from root.glob("*.json")
    yield from root.glob("*.jsonl")
    for folder in [*root.glob("*/images"), *root.glob("*/masks")]:
        try:
            yield from folder.iterdir()
        except OSError:  # not a folder, or unreadable: the command itself will say so
            continue
