"""The prepare pipeline: a preparer's plan -> validated, canonical dataset, written atomically.

A dataset plugin only knows its raw layout. It returns a `DatasetPlan`: the classes, the
(image, mask-source) pairs per split, how to read a mask's raw values and how raw values
map to class ids. This module does the rest for every dataset alike: reads the pairs in
worker processes, checks sizes and value sets, counts pixels per class, writes the
canonical layout into a temporary sibling folder and renames it into place only when
everything succeeded (`segcli.data.prepare_output`). The plan's types are in
`segcli.data.plan`, the per-sample work in `segcli.data.prepare_worker`, `--split-file` in
`segcli.data.split_file`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segcli.data.fingerprint import FINGERPRINT_FILE, compute_fingerprint
from segcli.data.format import IGNORE_INDEX, DatasetInfo, check_split_name
from segcli.data.plan import DatasetPlan
from segcli.data.prepare_output import (
    aborted_error,
    check_output,
    interrupts_held,
    remove_path,
    swap_into_place,
)
from segcli.data.prepare_worker import SampleResult, init_worker, process_sample, write_file
from segcli.data.split_file import SplitFile, apply_split_file
from segcli.errors import (
    DataError,
    UsageError,
)


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
    # one row per (class drawn under, class on top): {"under", "on_top", "pixels", "images"}
    contested: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _source_folders(plan: DatasetPlan) -> set[Path]:
    """The folders the plan reads its images and mask files from."""
    folders = set()
    for sample in plan.samples:
        for source in _paths_in(sample.image), _paths_in(sample.mask):
            folders.update(path.parent for path in source)
    return folders


def _paths_in(value: Any) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item)


def build_dataset(
    plan: DatasetPlan,
    out: Path,
    *,
    force: bool = False,
    workers: int | None = None,
    skip_unpaired: bool = False,
    preparer: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    inputs: Iterable[Path] = (),
    split_file: SplitFile | None = None,
) -> PrepareReport:
    """Validate and write `plan` as a canonical dataset at `out`, with its fingerprint; all or
    nothing.

    `inputs` are the folders and files the preparer read (besides the plan's own image and
    mask files): `out` may not be, contain or lie inside any of them. `split_file` replaces
    the preparer's own split of the labelled samples (see `apply_split_file`).
    """
    started = time.perf_counter()
    out = Path(out)
    check_output(out, force, [*inputs, *_source_folders(plan)])
    if not plan.samples:
        raise DataError(
            f"no images found for dataset {plan.name}",
            hint="check that the raw folder holds the layout this dataset expects",
        )
    if (plan.unpaired_images or plan.unpaired_masks) and not skip_unpaired:
        first = (plan.unpaired_images + plan.unpaired_masks)[0]
        raise DataError(
            f"{len(plan.unpaired_images)} images without masks and {len(plan.unpaired_masks)} "
            f"masks without images, e.g. {first}",
            hint="fix the names, or pass --skip-unpaired to leave them out",
        )
    if split_file is not None:
        apply_split_file(plan, split_file)
        preparer = {**(preparer or {}), "split_file": split_file.record()}
    for split in dict.fromkeys(sample.split for sample in plan.samples):
        check_split_name(split, f"dataset {plan.name}")
    _check_unique(plan)
    existed = out.exists()
    temporary = out.parent / f".{out.name}.tmp-{os.getpid()}"
    remove_path(temporary)
    try:
        for split in {s.split for s in plan.samples}:
            (temporary / split / "images").mkdir(parents=True)
            (temporary / split / "masks").mkdir(parents=True)
        results = list(_run(plan, temporary, workers, progress))
        report = _summarise(plan, out, results, skip_unpaired)
        if len(report.problems) == 1:
            raise DataError(f"dataset {plan.name}: {report.problems[0]}")
        if report.problems:
            error = DataError(
                f"{len(report.problems)} problems in dataset {plan.name}; first: "
                f"{report.problems[0]}",
                hint="fix the raw data (all problems are listed above)",
            )
            error.problems = report.problems  # type: ignore[attr-defined]
            raise error
        info = _dataset_info(plan, results, preparer or {})
        write_file(temporary / "dataset.json", info.to_json().encode())
        by_key = {(s.split, s.stem): s for s in plan.samples}
        records = [
            {
                "split": r.split,
                "stem": r.stem,
                "image": r.image_file,
                "mask": r.mask_file,
                "source_image": r.source_image,
                "source_mask": _describe(by_key[(r.split, r.stem)].mask),
                "meta": by_key[(r.split, r.stem)].meta,
            }
            for r in sorted(results, key=lambda r: (r.split, r.stem))
        ]
        lines = "".join(json.dumps(record) + "\n" for record in records)
        write_file(temporary / "samples.jsonl", lines.encode())
        fingerprint = compute_fingerprint(temporary, info)
        write_file(temporary / FINGERPRINT_FILE, fingerprint.to_json().encode())
        report.seconds = round(time.perf_counter() - started, 2)
        write_file(temporary / "report.json", json.dumps(report.to_dict(), indent=2).encode())
        with interrupts_held():
            swap_into_place(temporary, out)
    except BaseException as exc:
        remove_path(temporary)
        raise aborted_error(exc, out, existed) from None
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


def _run(plan, temporary, workers, progress) -> Iterator[SampleResult]:
    workers = max(1, workers or os.cpu_count() or 1)
    total = len(plan.samples)
    if workers == 1 or total < 8:
        init_worker(plan, temporary)
        for done, sample in enumerate(plan.samples, 1):
            yield process_sample(sample)
            if progress:
                progress(done, total)
        return
    chunk = max(1, min(64, total // (workers * 8)))
    others = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        workers, initializer=init_worker, initargs=(plan, temporary, os.getpid())
    )
    try:
        for done, result in enumerate(pool.map(process_sample, plan.samples, chunksize=chunk), 1):
            yield result
            if progress:
                progress(done, total)
    except BaseException:
        _stop_pool(pool, others)
        raise
    pool.shutdown()


def _stop_pool(pool: ProcessPoolExecutor, others: set) -> None:
    """Stop at once, instead of letting the workers finish every queued sample first: the
    samples still queued are dropped and the running ones ended (their output is discarded)."""
    pool.shutdown(wait=False, cancel_futures=True)
    workers = [p for p in multiprocessing.active_children() if p not in others]
    for process in workers:
        process.terminate()
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()


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
        contested=_contested_rows(plan, results),
    )


def _contested_rows(plan: DatasetPlan, results: list[SampleResult]) -> list[dict[str, Any]]:
    """The contested pixels of all drawn masks per class pair, most pixels first."""
    pixels: dict[tuple[int, int], int] = {}
    images: dict[tuple[int, int], int] = {}
    for r in results:
        for pair, count in r.contested.items():
            pixels[pair] = pixels.get(pair, 0) + count
            images[pair] = images.get(pair, 0) + 1
    names = {cls.id: cls.name for cls in plan.classes} | {IGNORE_INDEX: "(ignore)"}
    return [
        {
            "under": names.get(under, str(under)),
            "on_top": names.get(top, str(top)),
            "pixels": count,
            "images": images[(under, top)],
        }
        for (under, top), count in sorted(pixels.items(), key=lambda item: -item[1])
    ]


def _dataset_info(plan: DatasetPlan, results, preparer: dict[str, Any]) -> DatasetInfo:
    splits: dict[str, int] = {}
    labelled: set[str] = set()
    masks: dict[str, int] = {}
    class_pixels: dict[str, list[int]] = {}
    ignore_pixels: dict[str, int] = {}
    for r in results:
        splits[r.split] = splits.get(r.split, 0) + 1
        if r.class_counts is not None:
            labelled.add(r.split)
            masks[r.split] = masks.get(r.split, 0) + 1
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
        masks=dict(sorted(masks.items())),
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
        "options": {k: _plain(v) for k, v in options.items()},
    }


def _plain(value: Any) -> Any:
    """An option's value as JSON holds it: paths (also a repeated option's) as text."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


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
        raise DataError(
            f"raw folder {raw} is empty",
            hint=f"put the raw {dataset} files there, or pass the folder that holds them",
        )
    return raw
