"""Prediction: from a checkpoint (or an exported model) and image files to masks and pictures.

Images are loaded in background workers and preprocessed as in training: resized to the
checkpoint's `input.size` (or kept at their own size when the model was trained at native
size, padded by the engine to the model's size divisor). Everything after the model works
on class probabilities: test-time flips are averaged there, sliding windows are blended
there, and the probabilities are resized back to each image's own size in horizontal
strips, so no output needs full-resolution float maps of every class at once.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from segcli.config import RunConfig, build_config
from segcli.data.format import IMAGE_SUFFIXES, ClassInfo, DatasetInfo
from segcli.data.io import (
    OutputLedger,
    max_image_pixels,
    publish_file,
    read_image,
    remove_stale_temporaries,
    temporary_file,
    write_error,
    write_png_atomic,
)
from segcli.engine.build import (
    autocast_for,
    forward,
    probabilities,
    rebuild_model,
    resolve_device,
)
from segcli.engine.checkpoint import load_checkpoint, load_model_state
from segcli.engine.tiling import sliding_window, tiling_options
from segcli.errors import CheckpointError, ConfigError, DataError, OutputError, UsageError
from segcli.palette import colorize, overlay

# flip dimensions of each test-time view; the views' probabilities are averaged
TTA_VIEWS: dict[str, list[tuple[int, ...]]] = {
    "none": [()],
    "flip": [(), (3,)],
    "flip-hv": [(), (3,), (2,), (2, 3)],
}
PROBABILITY_FORMATS = ("npy", "png")
AMP_MODES = ("auto", "off", "bf16", "fp16")
STRIP_ROWS = 256  # rows of full-resolution probabilities held at once when resizing back


def reuse_freed_memory() -> None:
    """Let glibc keep freed activation buffers for the next batch instead of unmapping them.

    A batch's convolution activations are tens of MB, above glibc's largest automatic mmap
    threshold (32 MB), so by default every forward pass maps fresh pages, faults them in
    zeroed and unmaps them again: on CPU that cost about a quarter of inference time
    (benchmarks/predict_throughput.py). Buffers up to 256 MB now come from the heap and up to
    512 MB of free heap is kept; larger ones (whole decoded images) are still returned.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 256 << 20)
    mallopt(m_trim_threshold, 512 << 20)


@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    out_dir: str = ""


class Predictor:
    """A model with the preprocessing it was trained with, from a segcli checkpoint
    (`.safetensors`) or an export made by `segcli export` (`.onnx`, TorchScript `.pt`)."""

    def __init__(
        self,
        checkpoint_path: Path,
        device: str = "auto",
        *,
        amp: str = "auto",
        tta: str = "none",
        threshold: float | None = None,
    ) -> None:
        checkpoint_path = Path(checkpoint_path)
        self.device = resolve_device(device)
        if checkpoint_path.suffix in (".onnx", ".pt"):
            from segcli.engine.export import load_exported

            meta, self.model = load_exported(checkpoint_path, self.device)
            self.exported = True
        else:
            checkpoint = load_checkpoint(checkpoint_path)
            meta = checkpoint.meta
            self.exported = False
        try:
            self.config = _saved_config(meta, checkpoint_path)
            self.classes = [
                ClassInfo(c["id"], c["name"], tuple(c["color"])) for c in meta["classes"]
            ]
            self.channels = int(meta["image_channels"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{checkpoint_path} lacks segcli metadata ({exc})") from None
        self.meta = meta
        if not self.exported:
            self.config.model.backbone_weights = None  # the checkpoint holds all weights
            self.model = rebuild_model(
                self.config, meta, self.dataset_info(), source=checkpoint_path
            )
            load_model_state(self.model, checkpoint.model_state, checkpoint_path)
            self.model.to(self.device).eval()
        self.mean, self.std = self.config.input.normalisation(self.channels)
        self.size = list(self.config.input.size) if self.config.input.size else None
        self.num_classes = max(2, len(self.classes))
        if threshold is not None and self.num_classes != 2:
            raise UsageError(
                f"--threshold applies to binary models; this one has {self.num_classes} classes",
                hint="leave --threshold out: the most probable class is taken",
            )
        self.threshold = self.config.train.threshold if threshold is None else threshold
        if not 0 < self.threshold < 1:
            raise UsageError(f"--threshold {self.threshold} must lie between 0 and 1")
        if tta not in TTA_VIEWS:
            raise UsageError(f"unknown --tta {tta!r}; valid: {', '.join(TTA_VIEWS)}")
        self.views = TTA_VIEWS[tta]
        if amp not in AMP_MODES:
            raise UsageError(f"unknown --amp {amp!r}; valid: {', '.join(AMP_MODES)}")
        if amp == "auto":
            amp = "fp16" if self.device.type == "cuda" and not self.exported else "off"
        self.amp = "off" if self.exported else amp
        self.palette = [c.color for c in self.classes]
        self._mean = torch.tensor(self.mean).view(-1, 1, 1)
        self._std = torch.tensor(self.std).view(-1, 1, 1)

    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.meta.get("dataset", "?"),
            classes=self.classes,
            splits={},
            image_channels=self.channels,
        )

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, C) -> normalised float (C, H, W) at the image's own size."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
        return (tensor - self._mean) / self._std

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """As in training: resized to `input.size` when the model was trained resized."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
        if self.size and list(tensor.shape[-2:]) != list(self.size):
            tensor = F.interpolate(
                tensor[None], size=self.size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        return (tensor - self._mean) / self._std

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) float32 CPU class probabilities for a preprocessed batch, TTA averaged."""

        batch = batch.to(self.device, non_blocking=True)
        total = None
        for dims in self.views:
            view = batch.flip(dims) if dims else batch
            with autocast_for(self.amp, self.device):
                logits = forward(self.model, view)
            probs = probabilities(logits.float())
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total + probs
        return (total / len(self.views)).cpu()

    def window_probabilities(self, windows: list[np.ndarray]) -> torch.Tensor:
        return self.probabilities(torch.stack([self.normalise(w) for w in windows]))

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """uint8 class indices from (K, ...) probabilities: threshold for binary, else argmax."""
        if probs.shape[0] == 2:
            return (probs[1] > self.threshold).to(torch.uint8)
        return probs.argmax(0).to(torch.uint8)

    def predict_image(
        self,
        image: np.ndarray,
        emit: Callable[[int, torch.Tensor], None],
        *,
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """`emit(top, (K, rows, W) probabilities)` strips covering one image at its own size."""
        if tile:
            sliding_window(
                image,
                self.window_probabilities,
                self.num_classes,
                emit,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                progress=progress,
            )
            return
        probs = self.probabilities(self.preprocess(image)[None])[0]
        emit_resized(probs, *image.shape[:2], emit=emit)
        if progress:
            progress(1)

    def predict_mask(self, image: np.ndarray, **tiling: Any) -> np.ndarray:
        """The (H, W) uint8 class mask of one image (uint8 H, W, C)."""
        mask = np.empty(image.shape[:2], np.uint8)

        def keep(top: int, probs: torch.Tensor) -> None:
            mask[top : top + probs.shape[1]] = self.decide(probs).numpy()

        self.predict_image(image, keep, **tiling)
        return mask


def _source_index(size_out: int, size_in: int, start: int, stop: int):
    """Bilinear source rows/columns as torch's interpolate (align_corners=False) computes them."""
    coords = (torch.arange(start, stop, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5
    coords = coords.clamp_(min=0)
    low = coords.floor().long().clamp_(max=size_in - 1)
    high = (low + 1).clamp_(max=size_in - 1)
    return low, high, (coords - low).float()


def resized_strips(
    probs: torch.Tensor, height: int, width: int, rows: int = STRIP_ROWS
) -> Iterator[tuple[int, torch.Tensor]]:
    """Bilinear resize of (K, h, w) to (K, height, width), one strip of `rows` rows at a time."""
    in_h, in_w = probs.shape[-2:]
    if (in_h, in_w) == (height, width):
        for top in range(0, height, rows):
            yield top, probs[:, top : top + rows]
        return
    left, right, fx = _source_index(width, in_w, 0, width)
    for top in range(0, height, rows):
        upper, lower, fy = _source_index(height, in_h, top, min(top + rows, height))
        vertical = torch.lerp(probs[:, upper], probs[:, lower], fy[:, None])
        yield top, torch.lerp(vertical[:, :, left], vertical[:, :, right], fx)


def emit_resized(
    probs: torch.Tensor, height: int, width: int, *, emit: Callable[[int, torch.Tensor], None]
) -> None:
    for top, strip in resized_strips(probs, height, width):
        emit(top, strip)


def loader_workers(requested: int | None, device: torch.device, images: int) -> int:
    """Background loading processes: on a CPU they would take cores from the model's own
    threads (measured slower on 2 cores), so by default only a GPU run gets them."""
    if images <= 1:
        return 0
    if requested is None:
        return 2 if device.type == "cuda" else 0
    return max(0, requested)


def discover_inputs(
    inputs: Iterable[Path | str], recursive: bool = False
) -> list[tuple[Path, Path]]:
    """(image, path relative to its input root) for files, folders and glob patterns."""
    found: list[tuple[Path, Path]] = []
    inputs = list(inputs)
    for item in inputs:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise DataError(f"no files match {text!r}")
            root = _glob_root(text)
            found += [
                (m, m.relative_to(root) if is_inside(m, root) else Path(m.name)) for m in matches
            ]
            continue
        path = Path(item)
        if path.is_file():
            found.append((path, Path(path.name)))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            images = sorted(
                p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            found += [(p, p.relative_to(path)) for p in images]
        else:
            raise DataError(f"input {path} does not exist")
    if not found:
        raise DataError(
            f"no images found in {', '.join(str(i) for i in inputs)}",
            hint=f"supported: {', '.join(IMAGE_SUFFIXES)}; use --recursive for subfolders",
        )
    return found


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard: outputs mirror below it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def output_stems(files: list[tuple[Path, Path]]) -> list[Path]:
    """`<rel>/<stem>` per input, or `<rel>/<name>` where two share a stem (a.png, a.jpg)."""
    stems = [relative.with_suffix("") for _, relative in files]
    seen: dict[str, int] = {}
    for stem in stems:
        seen[str(stem).lower()] = seen.get(str(stem).lower(), 0) + 1
    return [
        relative if seen[str(stem).lower()] > 1 else stem
        for (_, relative), stem in zip(files, stems, strict=True)
    ]


class _ImageFiles(Dataset):
    """Loads (in DataLoader workers) what the main process needs of each image, nothing more."""

    def __init__(
        self,
        files: list[tuple[Path, Path]],
        predictor: Predictor,
        keep_image: bool,
        preprocess: bool,
        max_pixels: int,
    ) -> None:
        self.files = files
        self.predictor = predictor
        self.keep_image = keep_image
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index][0]
        try:
            image = read_image(path, self.predictor.channels, self.max_pixels)
        except DataError as exc:
            return {"index": index, "error": str(exc)}
        item: dict[str, Any] = {"index": index, "shape": image.shape[:2]}
        if self.keep_image:
            item["image"] = image
        if self.preprocess:
            item["tensor"] = self.predictor.preprocess(image)
        return item


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


def path_key(path: Path) -> str:
    """Equal for two paths naming the same file (links resolved, case folded where the OS does)."""
    return os.path.normcase(os.path.realpath(path))


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding `folder` accepts."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def default_output_dir(inputs: list[Path | str]) -> Path:
    first = _glob_root(str(inputs[0])) if glob.has_magic(str(inputs[0])) else Path(inputs[0])
    base = first if first.is_dir() else first.parent
    return base.parent / f"{base.resolve().name}-pred"


def check_output_dir(
    out_dir: Path, inputs: list[Path | str], files: list[tuple[Path, Path]]
) -> None:
    """Inputs and outputs never mix: the output folder neither lies in an input folder nor
    holds an input file (where --force could replace an image)."""
    for item in inputs:
        root = _glob_root(str(item)) if glob.has_magic(str(item)) else Path(item)
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


def prepare_output_dir(out_dir: Path, ledger: OutputLedger) -> None:
    """Create the folder, clear temporaries of killed runs, and tidy the ledger."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"cannot write into {out_dir}: permission denied")
    remove_stale_temporaries(out_dir)
    ledger.compact()


def predict_paths(
    checkpoint: Path,
    inputs: list[Path | str],
    out_dir: Path | None = None,
    *,
    colorize_masks: bool = False,
    overlay_alpha: float | None = None,
    probability_format: str | None = None,
    threshold: float | None = None,
    recursive: bool = False,
    batch_size: int = 4,
    workers: int | None = None,
    device: str = "auto",
    amp: str = "auto",
    tta: str = "none",
    tile: int | None = None,
    overlap: float | None = None,
    force: bool = False,
    max_pixels: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> PredictReport:
    """Predict every input image; a broken image is reported in `failed`, the rest go on.

    Nothing is written before every output is known not to collide, not to replace an
    input, and (unless `force`) not to replace a file segcli did not write. A failed write
    (disk full, ...) stops the run: no later image could be written either."""
    if probability_format not in (None, *PROBABILITY_FORMATS):
        raise UsageError(f"unknown --probabilities {probability_format!r}; valid: npy, png")
    if overlay_alpha is not None and not 0 < overlay_alpha <= 1:
        raise UsageError(f"--alpha {overlay_alpha} must lie in (0, 1]")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} must be at least 1")
    tile, overlap = tiling_options(tile, overlap)
    max_pixels = max_image_pixels(max_pixels)
    files = discover_inputs(inputs, recursive)
    bases = output_stems(files)
    out_dir = Path(out_dir) if out_dir else default_output_dir(inputs)
    check_output_dir(out_dir, inputs, files)
    ledger = OutputLedger(out_dir)
    suffixes = output_suffixes(colorize_masks, overlay_alpha, probability_format)
    check_outputs(files, bases, out_dir, suffixes, ledger, force)
    predictor = Predictor(checkpoint, device, amp=amp, tta=tta, threshold=threshold)
    if tile and hasattr(predictor.model, "check_size"):  # a static ONNX export: fail before writing
        predictor.model.check_size(tile, tile)
    prepare_output_dir(out_dir, ledger)
    batched = bool(predictor.size) and not tile  # all preprocessed tensors share one size
    dataset = _ImageFiles(
        files,
        predictor,
        keep_image=bool(tile) or overlay_alpha is not None,
        preprocess=not tile,
        max_pixels=max_pixels,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size if batched else 1,
        collate_fn=list,
        num_workers=loader_workers(workers, predictor.device, len(files)),
        pin_memory=predictor.device.type == "cuda",
    )
    report = PredictReport(out_dir=str(out_dir))

    def save(item: dict[str, Any], produce: Callable[[Callable], None]) -> None:
        outputs = ImageOutputs(
            predictor,
            out_dir / bases[item["index"]],
            *item["shape"],
            colorize_masks=colorize_masks,
            overlay_alpha=overlay_alpha,
            probability_format=probability_format,
            ledger=ledger,
        )
        try:
            produce(outputs.add)
            report.written += [str(p) for p in outputs.write(item.get("image"))]
        finally:
            outputs.discard()

    for items in loader:
        good = [item for item in items if "error" not in item]
        for item in items:
            if "error" in item:
                report.failed.append((str(files[item["index"]][0]), item["error"]))
                if progress:
                    progress(1)
        if not good:
            continue
        if tile:
            for item in good:
                save(
                    item,
                    lambda emit, image=item["image"]: predictor.predict_image(
                        image,
                        emit,
                        tile=tile,
                        overlap=overlap,
                        batch_size=batch_size,
                        progress=progress,
                    ),
                )
            continue
        batch_probs = predictor.probabilities(torch.stack([item["tensor"] for item in good]))
        for item, probs in zip(good, batch_probs, strict=True):
            save(
                item,
                lambda emit, probs=probs, shape=item["shape"]: emit_resized(
                    probs, *shape, emit=emit
                ),
            )
        if progress:
            progress(len(good))
    return report


def is_inside(child: Path, parent: Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def _saved_config(meta: dict[str, Any], checkpoint_path: Path) -> RunConfig:
    """The configuration a checkpoint was trained with; one this segcli refuses is the
    checkpoint's fault, not the command line's."""
    try:
        return build_config(meta["config"], recipe_source=str(checkpoint_path))
    except ConfigError as error:
        raise CheckpointError(
            f"the configuration saved in the checkpoint is not valid: {error.message}",
            hint="was it written by another segcli version? train it again, or use that version",
        ) from None
