"""One sample of the prepare pipeline, in a worker process: read, check, map, count, write.

The pipeline (`segcli.data.prepare`) hands each worker the plan once (`init_worker`) and then
samples one by one (`process_sample`); a worker whose parent dies ends itself.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcli.data.format import IGNORE_INDEX
from segcli.data.images import decode_image
from segcli.data.plan import DatasetPlan, DrawnMask, Sample
from segcli.errors import (
    DataError,
)
from segcli.files import write_error
from segcli.processes import process_alive

# Formats whose original bytes are kept: the trainer reads each of them directly.
_COPIED_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Seconds a worker's parent watch sleeps between looks (where the kernel cannot tell it).
_PARENT_POLL_SECONDS = 1.0


@dataclass
class SampleResult:
    split: str
    stem: str
    image_file: str | None = None
    mask_file: str | None = None
    raw_values: list[int] = field(default_factory=list)
    class_counts: np.ndarray | None = None
    problem: str | None = None
    source_image: str | None = None
    contested: dict[tuple[int, int], int] = field(default_factory=dict)


# Per-worker state, set once by `init_worker` instead of being pickled with every sample.
_worker: dict[str, Any] = {}


def init_worker(plan: DatasetPlan, target: Path, parent: int | None = None) -> None:
    """Worker set-up; `parent` is the pid of the prepare process when this runs in a pool."""
    _worker.update(plan=plan, target=target)
    if parent is None:
        return
    # Ctrl-C reaches the whole process group: the parent stops the pool, the workers wait.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)


def _exit_with_parent(parent: int) -> None:
    """End this worker when the prepare process dies (even by SIGKILL), instead of idling on."""
    if not _kernel_signals_parent_death():
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    if not process_alive(parent):
        os._exit(1)


def _kernel_signals_parent_death() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(watched: int) -> None:
    while os.getppid() == watched:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def process_sample(sample: Sample) -> SampleResult:
    """Read, check and write one sample. Bad input becomes the result's `problem`; a failed
    write raises (ResourceError or OutputError), since no later sample can succeed either."""
    plan: DatasetPlan = _worker["plan"]
    target: Path = _worker["target"]
    result = SampleResult(sample.split, sample.stem)
    result.source_image = str(sample.image) if sample.image is not None else None
    images_dir = target / sample.split / "images"
    try:
        if plan.read_image is not None:
            pixels = plan.read_image(sample)
            size = (pixels.shape[1], pixels.shape[0])
            image_path = images_dir / f"{sample.stem}.png"
            image_bytes = _png_bytes(Image.fromarray(pixels))
        else:
            # read by the trainer's rule, so an image it would refuse (NaN pixels) fails here
            image = decode_image(sample.image)
            size = image.size
            suffix = sample.image.suffix.lower()
            if suffix in _COPIED_SUFFIXES:
                image_path = images_dir / f"{sample.stem}{suffix}"
                image_bytes = sample.image.read_bytes()
            else:
                image_path = images_dir / f"{sample.stem}.png"
                image_bytes = _png_bytes(image)
        if sample.mask is None or plan.read_mask is None:
            write_file(image_path, image_bytes)
            result.image_file = str(image_path.relative_to(target))
            return result
        raw = plan.read_mask(sample)
        if isinstance(raw, DrawnMask):
            result.contested = raw.contested
            raw = raw.values
        raw = np.asarray(raw)
        if raw.ndim != 2:
            result.problem = f"{sample.mask}: mask has shape {raw.shape}, expected a 2-D label map"
            return result
        if (raw.shape[1], raw.shape[0]) != size:
            result.problem = (
                f"{sample.mask}: mask is {raw.shape[1]}x{raw.shape[0]} but its image "
                f"{sample.image} is {size[0]}x{size[1]}"
            )
            return result
        values, inverse = np.unique(raw, return_inverse=True)
        result.raw_values = [int(v) for v in values]
        mapped_values = _map_values(values, plan)
        strays = [int(v) for v, m in zip(values, mapped_values, strict=True) if m < 0]
        if strays:
            result.problem = (
                f"{sample.mask}: values {strays[:8]} are not in the class map of {plan.name}"
            )
            return result
        mask = mapped_values.astype(np.uint8)[inverse.reshape(raw.shape)]
        mask_bytes = _png_bytes(Image.fromarray(mask, mode="L"))
    except DataError as exc:
        result.problem = str(exc)
        return result
    except OSError as exc:
        result.problem = f"{sample.image}: {exc}"
        return result
    mask_path = target / sample.split / "masks" / f"{sample.stem}.png"
    write_file(image_path, image_bytes)
    write_file(mask_path, mask_bytes)
    result.image_file = str(image_path.relative_to(target))
    result.mask_file = str(mask_path.relative_to(target))
    result.class_counts = np.bincount(mask.ravel(), minlength=256)
    return result


def _png_bytes(image: Image.Image) -> bytes:
    """Encoded in memory, so that an image Pillow cannot encode is a problem of that sample,
    and only a failed write is a failure of the output."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise write_error(path, exc) from None


def _map_values(values: np.ndarray, plan: DatasetPlan) -> np.ndarray:
    """Class id per raw value; -1 marks a stray value (not in the class map)."""
    num_classes = len(plan.classes)
    if plan.value_map is not None:
        mapped = np.array([plan.value_map.get(int(v), -1) for v in values], dtype=np.int64)
    else:
        mapped = values.astype(np.int64)
        mapped[(mapped >= num_classes) & (mapped != IGNORE_INDEX)] = -1
        mapped[mapped < 0] = -1
    if plan.stray_to_ignore:
        mapped[mapped < 0] = IGNORE_INDEX
    return mapped
