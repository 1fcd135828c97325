"""Prediction: from a checkpoint (or an exported model) and image files to masks and pictures.

Images are loaded (in background workers on CUDA, in the main process on a CPU, where
workers would take the model's cores) and preprocessed as in training
(`segcli.inference.preprocessing`): resized to the model's input size, or kept at their own
size for models trained at native size and for tiles. Everything after the model works on
class probabilities: test-time flips are averaged there, sliding windows are blended there,
and the probabilities are resized back to each image's own size in horizontal strips, so no
output needs full-resolution float maps of every class at once.

The parts: `predictor` (the model and its preprocessing), `input_files` (which files),
`output_files` (which files are written, and how), `tiling` (sliding windows); this module
is the loop that ties them together.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from segcli.data.images import max_image_pixels, read_image
from segcli.errors import DataError, UsageError
from segcli.inference.input_files import default_output_dir, discover_inputs, output_stems
from segcli.inference.output_files import (
    PROBABILITY_FORMATS,
    ImageOutputs,
    check_output_dir,
    check_outputs,
    output_suffixes,
)
from segcli.inference.predictor import LEARNED_TTA, Predictor, emit_resized, reuse_freed_memory
from segcli.inference.preprocessing import Preprocessing
from segcli.inference.tiling import tiling_options
from segcli.ledger import OutputLedger

__all__ = [
    "PredictReport",
    "Predictor",
    "loader_workers",
    "predict_paths",
    "read_ahead",
    "reuse_freed_memory",
]

T = TypeVar("T")


@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    out_dir: str = ""


def loader_workers(requested: int | None, device: torch.device, images: int) -> int:
    """Background loading processes: on a CPU they would take cores from the model's own
    threads (measured slower on 2 cores), so by default only a GPU run gets them."""
    if images <= 1:
        return 0
    if requested is None:
        return 2 if device.type == "cuda" else 0
    return max(0, requested)


def read_ahead(batches: Iterable[T]) -> Iterator[T]:
    """`batches` in their order, each read by a background thread while the caller works on
    the one before it.

    Without loader processes (on a CPU), the decoding of the next images then overlaps the
    model and this batch's post-processing: those leave a core idle on and off (the glue
    between the model calls runs on one core), and Pillow, zlib, onnxruntime and torch
    release the GIL while they work. An exception raised while reading is raised here, in
    the caller's thread; a caller that stops early stops the reading too."""
    # one batch waiting, one being read: as few as overlap needs (a batch of large images is large)
    waiting: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(entry: tuple[bool, Any]) -> None:
        while not stop.is_set():
            try:
                waiting.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for batch in batches:
                hand_over((True, batch))
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            hand_over((False, exc))
            return
        hand_over((False, None))

    reader = threading.Thread(target=read, name="segcli-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            is_batch, value = waiting.get()
            if not is_batch:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        reader.join()


class _ImageFiles(Dataset):
    """Loads (in DataLoader workers) what the main process needs of each image, nothing more.

    It holds the preprocessing, not the Predictor: workers started by spawn receive a pickled
    copy of the dataset, and the model must not travel with it."""

    def __init__(
        self,
        files: list[tuple[Path, Path]],
        preprocessing: Preprocessing,
        keep_image: bool,
        preprocess: bool,
        max_pixels: int,
    ) -> None:
        self.files = files
        self.preprocessing = preprocessing
        self.keep_image = keep_image
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index][0]
        try:
            image = read_image(path, self.preprocessing.image_channels, self.max_pixels)
        except DataError as exc:
            return {"index": index, "error": str(exc)}
        item: dict[str, Any] = {"index": index, "shape": image.shape[:2]}
        if self.keep_image:
            item["image"] = image
        if self.preprocess:
            item["tensor"] = self.preprocessing.image_input(image)
        return item


def predict_paths(
    checkpoint: Path,
    inputs: list[Path | str],
    out_dir: Path | None = None,
    *,
    colorize_masks: bool = False,
    overlay_alpha: float | None = None,
    probability_format: str | None = None,
    threshold: float | None = None,
    post_processing: bool = True,
    recursive: bool = False,
    batch_size: int = 4,
    workers: int | None = None,
    device: str = "auto",
    amp: str = "auto",
    tta: str = LEARNED_TTA,
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
    predictor = Predictor(
        checkpoint,
        device,
        amp=amp,
        tta=tta,
        threshold=threshold,
        post_processing=post_processing,
    )
    if tile and hasattr(predictor.model, "check_size"):  # a static ONNX export: fail before writing
        predictor.model.check_size(tile, tile)
    ledger.open_folder()
    batched = bool(predictor.size) and not tile  # all preprocessed tensors share one size
    dataset = _ImageFiles(
        files,
        predictor.preprocessing,
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

    for items in loader if loader.num_workers else read_ahead(loader):
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
