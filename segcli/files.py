"""Atomic writes: every output file appears whole or not at all; a failed write says why.

Each output file (a mask, a picture, a checkpoint, a report) goes to a short temporary
name in the destination folder and is renamed into place once complete, so no reader ever
sees half a file. Running out of disk space is a `ResourceError` (the machine, not the
output location, is at fault).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from segcli.errors import OutputError, ResourceError, SegcliError
from segcli.processes import process_alive

if TYPE_CHECKING:  # the ledger records what these functions write, and imports them
    from segcli.ledger import OutputLedger

TEMPORARY_PREFIX = ".segcli-"
TEMPORARY_SUFFIX = ".tmp"

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
