"""The prepare pipeline: a preparer's plan -> validated, canonical dataset, written atomically.

A dataset plugin only knows its raw layout. It returns a `DatasetPlan`: the classes, the
(image, mask-source) pairs per split, how to read a mask's raw values and how raw values
map to class ids. This module does the rest for every dataset alike: reads the pairs in
worker processes, checks sizes and value sets, counts pixels per class, writes the
canonical layout into a temporary sibling folder and renames it into place only when
everything succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcli.data.format import IGNORE_INDEX, ClassInfo, DatasetInfo
from segcli.data.io import open_image
from segcli.errors import DataError, OutputError, UsageError

__all__ = ["ClassInfo", "DatasetPlan", "PrepareReport", "Sample", "build_dataset"]

# Formats whose original bytes are kept: the trainer reads each of them directly.
_COPIED_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class Sample:
    """One image and where its label comes from. `mask` is whatever `read_mask` understands."""

    split: str
    stem: str
    image: Path | None
    mask: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetPlan:
    """What a preparer returns: everything needed to write the canonical dataset.

    read_mask(sample) -> 2-D integer array of *raw* label values (any dtype).
    value_map: raw value -> class id (or 255 = ignore); None keeps raw values as ids.
    read_image(sample) -> (H, W[, C]) uint8 array, for samples without an image file
    (generated data, slices of a volume); otherwise the image file's bytes are kept.
    read_mask and read_image must be module-level functions: they run in worker processes.
    """

    name: str
    classes: list[ClassInfo]
    samples: list[Sample]
    read_mask: Callable[[Sample], np.ndarray] | None = None
    value_map: dict[int, int] | None = None
    read_image: Callable[[Sample], np.ndarray] | None = None
    image_channels: int = 3
    notes: list[str] = field(default_factory=list)
    unpaired_images: list[str] = field(default_factory=list)
    unpaired_masks: list[str] = field(default_factory=list)
    stray_to_ignore: bool = False


@dataclass
class PrepareReport:
    """What was found and written; saved as report.json and shown as a table."""

    name: str
    out: str
    pairs: dict[str, int]
    unlabelled: dict[str, int]
    raw_values: dict[str, list[int]]
    mapped_values: dict[str, list[int]]
    class_share: dict[str, dict[str, float]]
    unpaired_images: list[str]
    unpaired_masks: list[str]
    notes: list[str]
    problems: list[str]
    empty_masks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _SampleResult:
    split: str
    stem: str
    image_file: str | None = None
    mask_file: str | None = None
    raw_values: list[int] = field(default_factory=list)
    class_counts: np.ndarray | None = None
    problem: str | None = None
    source_image: str | None = None


# Per-worker state, set once by `_init_worker` instead of being pickled with every sample.
_worker: dict[str, Any] = {}


def _init_worker(plan: DatasetPlan, target: Path) -> None:
    _worker.update(plan=plan, target=target)


def _process(sample: Sample) -> _SampleResult:
    plan: DatasetPlan = _worker["plan"]
    target: Path = _worker["target"]
    result = _SampleResult(sample.split, sample.stem)
    result.source_image = str(sample.image) if sample.image is not None else None
    images_dir = target / sample.split / "images"
    try:
        if plan.read_image is not None:
            pixels = plan.read_image(sample)
            size = (pixels.shape[1], pixels.shape[0])
            image_path = images_dir / f"{sample.stem}.png"
            Image.fromarray(pixels).save(image_path)
        else:
            image = open_image(sample.image)
            size = image.size
            suffix = sample.image.suffix.lower()
            if suffix in _COPIED_SUFFIXES:
                image_path = images_dir / f"{sample.stem}{suffix}"
                shutil.copyfile(sample.image, image_path)
            else:
                image_path = images_dir / f"{sample.stem}.png"
                image.save(image_path)
        result.image_file = str(image_path.relative_to(target))
        if sample.mask is None or plan.read_mask is None:
            return result
        raw = np.asarray(plan.read_mask(sample))
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
        result.class_counts = np.bincount(mask.ravel(), minlength=256)
        mask_path = target / sample.split / "masks" / f"{sample.stem}.png"
        Image.fromarray(mask, mode="L").save(mask_path)
        result.mask_file = str(mask_path.relative_to(target))
    except DataError as exc:
        result.problem = str(exc)
    except OSError as exc:
        result.problem = f"{sample.image}: {exc}"
    return result


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


def _stale_temporaries(out: Path) -> Iterator[Path]:
    for candidate in out.parent.glob(f".{out.name}.tmp-*"):
        pid = candidate.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            yield candidate


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output(out: Path, force: bool) -> None:
    """Refuse to overwrite without --force, and check the parent can be written."""
    if out.exists() and not force:
        raise OutputError(
            f"{out} already exists", hint="pass --force to replace it, or choose another --out"
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write into {parent}: permission denied")


def build_dataset(
    plan: DatasetPlan,
    out: Path,
    *,
    force: bool = False,
    workers: int | None = None,
    skip_unpaired: bool = False,
    preparer: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Validate and write `plan` as a canonical dataset at `out`; all or nothing."""
    started = time.perf_counter()
    out = Path(out)
    check_output(out, force)
    if not plan.samples:
        raise DataError(f"no images found for dataset {plan.name}", hint="check the raw folder")
    if (plan.unpaired_images or plan.unpaired_masks) and not skip_unpaired:
        first = (plan.unpaired_images + plan.unpaired_masks)[0]
        raise DataError(
            f"{len(plan.unpaired_images)} images without masks and {len(plan.unpaired_masks)} "
            f"masks without images, e.g. {first}",
            hint="fix the names, or pass --skip-unpaired to leave them out",
        )
    _check_unique(plan)
    for stale in _stale_temporaries(out):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        for split in {s.split for s in plan.samples}:
            (temporary / split / "images").mkdir(parents=True)
            (temporary / split / "masks").mkdir(parents=True)
        results = list(_run(plan, temporary, workers, progress))
        report = _summarise(plan, out, results, skip_unpaired)
        if report.problems:
            error = DataError(
                f"{len(report.problems)} problem(s) in dataset {plan.name}; first: "
                f"{report.problems[0]}",
                hint="fix the raw data (all problems are listed above)",
            )
            error.problems = report.problems  # type: ignore[attr-defined]
            raise error
        report.seconds = round(time.perf_counter() - started, 2)
        info = _dataset_info(plan, results, preparer or {})
        (temporary / "dataset.json").write_text(info.to_json())
        (temporary / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        with open(temporary / "samples.jsonl", "w") as stream:
            by_key = {(s.split, s.stem): s for s in plan.samples}
            for r in sorted(results, key=lambda r: (r.split, r.stem)):
                record = {
                    "split": r.split,
                    "stem": r.stem,
                    "image": r.image_file,
                    "mask": r.mask_file,
                    "source_image": r.source_image,
                    "source_mask": _describe(by_key[(r.split, r.stem)].mask),
                    "meta": by_key[(r.split, r.stem)].meta,
                }
                stream.write(json.dumps(record) + "\n")
        _swap_into_place(temporary, out)
    except BaseException as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write dataset into {out}: {exc}") from None
        raise
    return report


def _check_unique(plan: DatasetPlan) -> None:
    seen: set[tuple[str, str]] = set()
    for sample in plan.samples:
        key = (sample.split, sample.stem)
        if key in seen:
            raise DataError(
                f"two samples of split {sample.split!r} share the name {sample.stem!r} "
                f"(second: {sample.image})",
                hint="rename one of them",
            )
        seen.add(key)


def _run(plan, temporary, workers, progress) -> Iterator[_SampleResult]:
    workers = max(1, workers or os.cpu_count() or 1)
    total = len(plan.samples)
    if workers == 1 or total < 8:
        _init_worker(plan, temporary)
        for done, sample in enumerate(plan.samples, 1):
            yield _process(sample)
            if progress:
                progress(done, total)
        return
    chunk = max(1, min(64, total // (workers * 8)))
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(plan, temporary)) as pool:
        for done, result in enumerate(pool.map(_process, plan.samples, chunksize=chunk), 1):
            yield result
            if progress:
                progress(done, total)


def _summarise(plan, out, results, skip_unpaired) -> PrepareReport:
    pairs: dict[str, int] = {}
    unlabelled: dict[str, int] = {}
    raw_values: dict[str, set[int]] = {}
    mapped: dict[str, set[int]] = {}
    counts: dict[str, np.ndarray] = {}
    empty: dict[str, int] = {}
    problems = [r.problem for r in results if r.problem]
    for r in results:
        if r.mask_file is None:
            unlabelled[r.split] = unlabelled.get(r.split, 0) + 1
            continue
        pairs[r.split] = pairs.get(r.split, 0) + 1
        raw_values.setdefault(r.split, set()).update(r.raw_values)
        counts[r.split] = counts.get(r.split, 0) + r.class_counts
        if not r.class_counts[1 : len(plan.classes)].any():
            empty[r.split] = empty.get(r.split, 0) + 1
        mapped.setdefault(r.split, set()).update(int(v) for v in np.flatnonzero(r.class_counts))
    share = {}
    for split, c in counts.items():
        labelled = c[: len(plan.classes)].sum()
        share[split] = {
            cls.name: round(float(c[cls.id]) / max(1, labelled), 6) for cls in plan.classes
        }
        share[split]["(ignore)"] = round(float(c[IGNORE_INDEX]) / max(1, c.sum()), 6)
    return PrepareReport(
        name=plan.name,
        out=str(out),
        pairs=pairs,
        unlabelled=unlabelled,
        raw_values={k: sorted(v)[:64] for k, v in raw_values.items()},
        mapped_values={k: sorted(v) for k, v in mapped.items()},
        class_share=share,
        unpaired_images=plan.unpaired_images if skip_unpaired else [],
        unpaired_masks=plan.unpaired_masks if skip_unpaired else [],
        notes=plan.notes,
        problems=problems,
        empty_masks=empty,
    )


def _dataset_info(plan: DatasetPlan, results, preparer: dict[str, Any]) -> DatasetInfo:
    splits: dict[str, int] = {}
    labelled: set[str] = set()
    class_pixels: dict[str, list[int]] = {}
    ignore_pixels: dict[str, int] = {}
    for r in results:
        splits[r.split] = splits.get(r.split, 0) + 1
        if r.class_counts is not None:
            labelled.add(r.split)
            previous = class_pixels.get(r.split, [0] * len(plan.classes))
            class_pixels[r.split] = [
                a + int(b)
                for a, b in zip(previous, r.class_counts[: len(plan.classes)], strict=True)
            ]
            ignore_pixels[r.split] = ignore_pixels.get(r.split, 0) + int(
                r.class_counts[IGNORE_INDEX]
            )
    return DatasetInfo(
        name=plan.name,
        classes=list(plan.classes),
        splits=dict(sorted(splits.items())),
        image_channels=plan.image_channels,
        labelled_splits=sorted(labelled),
        class_pixels=class_pixels,
        ignore_pixels=ignore_pixels,
        preparer=preparer,
    )


def _describe(mask: Any) -> Any:
    if mask is None or isinstance(mask, (str, int, float)):
        return mask
    if isinstance(mask, Path):
        return str(mask)
    if isinstance(mask, (list, tuple)):
        return [_describe(m) for m in mask]
    return repr(mask)


def _swap_into_place(temporary: Path, out: Path) -> None:
    """Rename the finished dataset into place; an old one is removed only after that succeeded."""
    if out.exists():
        retired = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, retired)
        os.replace(temporary, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(temporary, out)


def provenance(name: str, raw: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """What dataset.json records about its making: preparer, plugin, versions, raw, options."""
    from segcli import __version__
    from segcli.plugins import get_plugins

    origin = get_plugins().datasets.entry(name).origin
    return {
        "name": name,
        "plugin": origin.plugin,
        "distribution": origin.distribution,
        "version": origin.version,
        "segcli_version": __version__,
        "raw": str(Path(raw).resolve()) if raw else None,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
    }


def require_raw_dir(raw: Path | None, dataset: str) -> Path:
    """The raw folder a preparer was given, or a clear error when it is missing or empty."""
    if raw is None:
        raise UsageError(
            f"dataset {dataset} needs the path of its raw folder",
            hint=f"segcli prepare {dataset} PATH",
        )
    raw = Path(raw)
    if not raw.exists():
        raise DataError(f"raw folder {raw} does not exist", hint="check the path")
    if not raw.is_dir():
        raise DataError(f"{raw} is not a folder", hint=f"segcli prepare {dataset} takes a folder")
    if not any(raw.iterdir()):
        raise DataError(f"raw folder {raw} is empty")
    return raw
