"""The prepare pipeline's output folder: checked before any work, swapped into place after.

`out` never overlaps an input; `force` only ever replaces a dataset segcli prepared; the new
dataset is written to a temporary sibling folder and renamed into place (an old one is
removed only after that), so a failed or interrupted prepare leaves `out` as it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from segcli.errors import (
    DataError,
    Interrupted,
    OutputError,
    ResourceError,
    UsageError,
)
from segcli.files import check_writable_folder, write_error
from segcli.json_files import read_json
from segcli.processes import process_alive


def _clean_leftovers(out: Path) -> None:
    """Tidy what an earlier prepare of `out` left when it was killed: its temporary folder goes,
    and an old dataset it had moved aside (killed between the two renames) is put back."""
    prefix = f".{out.name}."
    for leftover in out.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        kind, _, pid = leftover.name[len(prefix) :].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and process_alive(int(pid)):
            continue  # another prepare of the same folder is running
        if kind == "old" and not out.exists() and _is_prepared_dataset(leftover):
            os.replace(leftover, out)
        else:
            remove_path(leftover)


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _is_prepared_dataset(folder: Path) -> bool:
    """Whether `folder` holds a dataset.json that segcli wrote (not another tool's)."""
    try:
        data = read_json(folder / "dataset.json")
    except DataError:
        return False
    return isinstance(data, dict) and {"format_version", "classes", "splits"} <= data.keys()


def check_output(out: Path, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse an output that is, contains or lies inside one of `inputs`; refuse to replace
    anything without `force`, and with it anything but a dataset segcli prepared (or an empty
    folder). Also checks that the parent can be written."""
    out = Path(out)
    _check_apart(out, inputs)
    if out.parent.is_dir():
        _clean_leftovers(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputError(
                f"{out} already exists", hint="pass --force to replace it, or choose another --out"
            )
        if not (_is_prepared_dataset(out) or out.is_dir() and not any(out.iterdir())):
            raise OutputError(
                f"{out} is not a dataset prepared by segcli (no segcli dataset.json in it), and "
                f"--force only replaces those",
                hint="choose another --out, or move that folder away yourself",
            )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        blocker = next(p for p in (parent, *parent.parents) if p.exists() and not p.is_dir())
        raise OutputError(
            f"cannot create {parent}: {blocker} is a file, not a folder",
            hint="choose another --out",
        ) from None
    except OSError as exc:
        raise write_error(parent, exc) from None
    check_writable_folder(parent)


def _check_apart(out: Path, inputs: Iterable[Path]) -> None:
    """Inputs and the output never overlap: replacing the output must not touch an input."""
    target = out.resolve()
    hint = "choose an --out outside every input folder, e.g. next to the raw folder"
    for source in dict.fromkeys(Path(p) for p in inputs):
        resolved = source.resolve()
        if target == resolved:
            raise UsageError(f"--out {out} is the input {source}", hint=hint)
        if resolved.is_relative_to(target):
            raise UsageError(f"--out {out} contains the input {source}", hint=hint)
        if target.is_relative_to(resolved):
            raise UsageError(f"--out {out} is inside the input folder {source}", hint=hint)


def aborted_error(exc: BaseException, out: Path, existed: bool) -> BaseException:
    """The error to show for a prepare that stopped early: what happened, and that `out` (or
    the dataset already there) was left exactly as it was."""
    unchanged = f"{out} is unchanged" if existed else f"{out} was not created"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted; nothing was written, {unchanged}")
    if isinstance(exc, OSError):
        exc = write_error(Path(exc.filename or out), exc)
    if not isinstance(exc, (ResourceError, OutputError)):
        return exc
    hint = (
        f"free space on the disk of {out.parent} (or raise its size limit or quota), "
        "or choose another --out"
        if isinstance(exc, ResourceError)
        else f"check that {out.parent} can be written, or choose another --out"
    )
    return type(exc)(
        f"cannot write the dataset: {exc.message}; nothing was written, {unchanged}", hint=hint
    )


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ignore Ctrl-C while the finished dataset is renamed into place: stopping between the two
    renames would leave neither the old dataset nor the new one at `out`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def swap_into_place(temporary: Path, out: Path) -> None:
    """Rename the finished dataset into place; an old one is removed only after that succeeded
    (and put back if it did not)."""
    if not (out.exists() or out.is_symlink()):
        os.replace(temporary, out)
        return
    retired = out.parent / f".{out.name}.old-{os.getpid()}"
    remove_path(retired)
    os.replace(out, retired)
    try:
        os.replace(temporary, out)
    except BaseException:
        os.replace(retired, out)
        raise
    remove_path(retired)
