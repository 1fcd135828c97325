"""Where a prediction writes: output checks made before anything is written, the output
folder and its ledger, and one image's output files filled strip by strip."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import torch

from segcli.errors import UsageError
from segcli.files import publish_file, temporary_file, write_error, write_png_atomic
from segcli.inference.input_files import input_root, is_inside, path_key
from segcli.inference.predictor import Predictor
from segcli.inference.preprocessing import STRIP_ROWS
from segcli.ledger import OutputLedger
from segcli.palette import colorize, overlay

PROBABILITY_FORMATS = ("npy", "png")


class ImageOutputs:
    """One image's output files, filled strip by strip and written atomically at the end."""

    def __init__(
        self,
        predictor: Predictor,
        base: Path,
        height: int,
        width: int,
        *,
        colorize_masks: bool,
        overlay_alpha: float | None,
        probability_format: str | None,
        ledger: OutputLedger | None = None,
    ):
        self.predictor = predictor
        self.base = base
        self.ledger = ledger
        self.colorize_masks = colorize_masks
        self.overlay_alpha = overlay_alpha
        self.mask = np.empty((height, width), np.uint8)
        self.confidence = None
        if probability_format == "png":
            self.confidence = np.empty((height, width), np.uint8)
        self.probability_file: Path | None = None
        self.probability_map = None
        if probability_format == "npy":
            try:
                handle, self.probability_file = temporary_file(base.parent)
                os.close(handle)
                self.probability_map = np.lib.format.open_memmap(
                    self.probability_file,
                    mode="w+",
                    dtype=np.float16,
                    shape=(predictor.num_classes, height, width),
                )
                _reserve_disk_space(self.probability_file)
            except OSError as exc:
                self.discard()
                raise write_error(self.path(".probs.npy"), exc) from None

    def add(self, top: int, probs: torch.Tensor) -> None:
        rows = probs.shape[1]
        mask = self.predictor.decide(probs)
        self.mask[top : top + rows] = mask.numpy()
        if self.confidence is not None:
            chosen = probs.gather(0, mask.long()[None])[0]
            self.confidence[top : top + rows] = chosen.mul(255).round_().to(torch.uint8).numpy()
        if self.probability_map is not None:
            self.probability_map[:, top : top + rows] = probs.numpy()

    def write(self, image: np.ndarray | None) -> list[Path]:
        mask_path = self.path(".png")
        written = [mask_path]
        self.mask = self.predictor.finish(self.mask)
        write_png_atomic(mask_path, self.mask, self.ledger)
        palette = self.predictor.palette
        if self.colorize_masks:
            written.append(self.path(".color.png"))
            write_png_atomic(written[-1], colorize(self.mask, palette), self.ledger)
        if self.overlay_alpha is not None:
            written.append(self.path(".overlay.png"))
            blended = np.empty((*self.mask.shape, 3), np.uint8)
            for top in range(0, self.mask.shape[0], STRIP_ROWS):  # float copies stay strip-sized
                rows = slice(top, top + STRIP_ROWS)
                blended[rows] = overlay(image[rows], self.mask[rows], palette, self.overlay_alpha)
            write_png_atomic(written[-1], blended, self.ledger)
        if self.confidence is not None:
            written.append(self.path(".confidence.png"))
            write_png_atomic(written[-1], self.confidence, self.ledger)
        if self.probability_map is not None:
            written.append(self.path(".probs.npy"))
            self.probability_map.flush()
            self.probability_map = None
            publish_file(self.probability_file, written[-1], self.ledger)
        return written

    def discard(self) -> None:
        self.probability_map = None
        if self.probability_file is not None:
            self.probability_file.unlink(missing_ok=True)

    def path(self, suffix: str) -> Path:
        return self.base.with_name(self.base.name + suffix)


def _reserve_disk_space(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: writing into the mapping of a sparse file
    on a full disk would kill the process with SIGBUS instead of raising an error."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as stream:
        try:
            os.posix_fallocate(stream.fileno(), 0, os.fstat(stream.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate there
                raise


def output_suffixes(
    colorize_masks: bool, overlay_alpha: float | None, probability_format: str | None
) -> list[str]:
    """The files written per image, as suffixes of its output stem (see ImageOutputs.write)."""
    suffixes = [".png"]
    if colorize_masks:
        suffixes.append(".color.png")
    if overlay_alpha is not None:
        suffixes.append(".overlay.png")
    if probability_format == "png":
        suffixes.append(".confidence.png")
    if probability_format == "npy":
        suffixes.append(".probs.npy")
    return suffixes


def check_outputs(
    files: list[tuple[Path, Path]],
    bases: list[Path],
    out_dir: Path,
    suffixes: list[str],
    ledger: OutputLedger,
    force: bool,
) -> None:
    """Refuse, before anything is written, outputs that two inputs would share, that would
    replace an input (through a link), whose names the file system cannot hold, or that
    would replace a file segcli did not write there (unless `force`)."""
    inputs = {path_key(source): source for source, _ in files}
    claimed: dict[str, Path] = {}
    outputs = []
    name_max = _name_max(out_dir)
    for (source, _), base in zip(files, bases, strict=True):
        for suffix in suffixes:
            path = out_dir / base.parent / (base.name + suffix)
            key = path_key(path)
            if key in claimed:
                raise UsageError(
                    f"{claimed[key]} and {source} would both be written to {path}",
                    hint="rename one of them, or predict them in separate runs with different "
                    "--out folders",
                )
            if key in inputs:
                raise UsageError(
                    f"output {path} would replace the input {inputs[key]}",
                    hint="choose an --out folder that holds no input",
                )
            if len(os.fsencode(path.name)) > name_max:
                raise UsageError(
                    f"output name {path.name!r} is longer than the {name_max} bytes "
                    f"{out_dir} allows (input {source})",
                    hint="rename the input to a shorter name",
                )
            claimed[key] = source
            outputs.append(path)
    ledger.check_replaceable(outputs, force)


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding `folder` accepts."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_output_dir(
    out_dir: Path, inputs: list[Path | str], files: list[tuple[Path, Path]]
) -> None:
    """Inputs and outputs never mix: the output folder neither lies in an input folder nor
    holds an input file (where --force could replace an image)."""
    for item in inputs:
        root = input_root(item)
        if root.is_dir() and is_inside(out_dir, root):
            raise UsageError(
                f"output folder {out_dir} is inside the input folder {root}",
                hint="choose an --out outside the input, so inputs and outputs never mix",
            )
    for source, _ in files:
        if is_inside(source, out_dir):
            raise UsageError(
                f"output folder {out_dir} holds the input {source}",
                hint="choose an --out folder that holds no input, so inputs and outputs never mix",
            )
