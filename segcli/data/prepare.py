"""The prepare pipeline: a preparer's plan -> validated, canonical dataset, written atomically.

A dataset plugin only knows its raw layout. It returns a `DatasetPlan`: the classes, the
(image, mask-source) pairs per split, how to read a mask's raw values and how raw values
map to class ids. This module does the rest for every dataset alike: reads the pairs in
worker processes, checks sizes and value sets, counts pixels per class, writes the
canonical layout into a temporary sibling folder and renames it into place only when
everything succeeded. It never writes inside its inputs, and `force` only ever replaces a
dataset that it wrote itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcli.data.fingerprint import FINGERPRINT_FILE, compute_fingerprint
from segcli.data.format import IGNORE_INDEX, ClassInfo, DatasetInfo, check_split_name
from segcli.data.images import decode_image
from segcli.errors import (
    ConfigError,
    DataError,
    Interrupted,
    OutputError,
    ResourceError,
    UsageError,
    shortened,
)
from segcli.files import check_writable_folder, write_error
from segcli.json_files import parse_json, read_json
from segcli.processes import process_alive

__all__ = [
    "ClassInfo",
    "DatasetPlan",
    "DrawnMask",
    "PrepareReport",
    "Sample",
    "SplitFile",
    "build_dataset",
    "read_split_file",
]

# Formats whose original bytes are kept: the trainer reads each of them directly.
_COPIED_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Seconds a worker's parent watch sleeps between looks (where the kernel cannot tell it).
_PARENT_POLL_SECONDS = 1.0


@dataclass
class Sample:
    """One image and where its label comes from. `mask` is whatever `read_mask` understands."""

    split: str
    stem: str
    image: Path | None
    mask: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DrawnMask:
    """What `read_mask` returns for a mask drawn from regions that may overlap (annotations):
    the label values, and the pixels each class lost to another, as
    (class id drawn under, class id on top) -> pixels. The report sums them per class pair."""

    values: np.ndarray
    contested: dict[tuple[int, int], int]


@dataclass
class DatasetPlan:
    """What a preparer returns: everything needed to write the canonical dataset.

    read_mask(sample) -> 2-D integer array of *raw* label values (any dtype), or a DrawnMask.
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
    # one row per (class drawn under, class on top): {"under", "on_top", "pixels", "images"}
    contested: list[dict[str, Any]] = field(default_factory=list)
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
    contested: dict[tuple[int, int], int] = field(default_factory=dict)


# Per-worker state, set once by `_init_worker` instead of being pickled with every sample.
_worker: dict[str, Any] = {}


def _init_worker(plan: DatasetPlan, target: Path, parent: int | None = None) -> None:
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


def _process(sample: Sample) -> _SampleResult:
    """Read, check and write one sample. Bad input becomes the result's `problem`; a failed
    write raises (ResourceError or OutputError), since no later sample can succeed either."""
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
            _write_file(image_path, image_bytes)
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
    _write_file(image_path, image_bytes)
    _write_file(mask_path, mask_bytes)
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


def _write_file(path: Path, data: bytes) -> None:
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
            _remove(leftover)


def _remove(path: Path) -> None:
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
    _remove(temporary)
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
        _write_file(temporary / "dataset.json", info.to_json().encode())
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
        _write_file(temporary / "samples.jsonl", lines.encode())
        fingerprint = compute_fingerprint(temporary, info)
        _write_file(temporary / FINGERPRINT_FILE, fingerprint.to_json().encode())
        report.seconds = round(time.perf_counter() - started, 2)
        _write_file(temporary / "report.json", json.dumps(report.to_dict(), indent=2).encode())
        with _interrupts_held():
            _swap_into_place(temporary, out)
    except BaseException as exc:
        _remove(temporary)
        raise _aborted(exc, out, existed) from None
    return report


_SPLIT_FILE_HINT = 'a split file is a JSON object like {"train": ["stem", ...], "val": [...]}'


@dataclass(frozen=True)
class SplitFile:
    """A user's own split of the labelled samples: split name -> the stems it holds."""

    path: Path
    sha256: str
    splits: dict[str, list[str]]

    def record(self) -> dict[str, str]:
        """What dataset.json's provenance keeps of it."""
        return {"path": str(self.path.resolve()), "sha256": self.sha256}


def read_split_file(path: Path) -> SplitFile:
    """Read `{"train": [stems], "val": [stems], ...}`: each list is a split; string and number
    values (`"dataset"`, `"rule"`, `"seed"`) describe the file and are ignored. Numbers in a
    list are stems too (`[0, 1, 2]`). Refuses a missing `train` list and a stem listed twice."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read split file {path}: {exc.strerror or exc}", hint="check --split-file"
        ) from None
    data = parse_json(content, f"split file {path}", ConfigError, _SPLIT_FILE_HINT)
    if not isinstance(data, dict):
        raise ConfigError(f"split file {path} must hold a JSON object", hint=_SPLIT_FILE_HINT)
    splits: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            continue
        if not isinstance(value, list):
            raise ConfigError(
                f"split file {path}: {key!r} must be a list of stems (or a descriptive string "
                f"or number), not {json.dumps(value)[:40]}",
                hint=_SPLIT_FILE_HINT,
            )
        check_split_name(key, f"split file {path}", ConfigError)
        not_stems = [v for v in value if not _is_stem(v)]
        if not_stems:
            raise ConfigError(
                f"split file {path}: {key!r} holds {json.dumps(not_stems[0])[:40]}, which is "
                "not a stem",
                hint="list file names without their extension, as strings",
            )
        splits[key] = [str(v) for v in value]
    if "train" not in splits:
        raise ConfigError(
            f'split file {path} has no "train" list'
            + (f" (its lists: {', '.join(splits)})" if splits else ""),
            hint=_SPLIT_FILE_HINT,
        )
    where: dict[str, list[str]] = {}
    for split, stems in splits.items():
        for stem in stems:
            where.setdefault(stem, []).append(split)
    repeated = [stem for stem, found in where.items() if len(found) > 1]
    if repeated:
        raise ConfigError(
            f"split file {path} lists {len(repeated)} stem(s) more than once, e.g. "
            f"{repeated[0]!r} in {' and '.join(where[repeated[0]])}",
            hint="each sample belongs to exactly one split",
        )
    return SplitFile(path, hashlib.sha256(content).hexdigest(), splits)


def _is_stem(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, int) and not isinstance(value, bool)


def apply_split_file(plan: DatasetPlan, split_file: SplitFile) -> None:
    """Put each labelled sample into the split the file names for its stem; refuses a labelled
    sample the file does not list, a listed stem that is no labelled sample, and a stem shared
    by several labelled samples. Images without masks (a benchmark's test images) keep the
    preparer's split: the file places labelled samples only."""
    path = split_file.path
    labelled: dict[str, list[Sample]] = {}
    for sample in plan.samples:
        if sample.mask is not None:
            labelled.setdefault(sample.stem, []).append(sample)
    shared = [stem for stem, found in labelled.items() if len(found) > 1]
    if shared:
        found = labelled[shared[0]]
        raise ConfigError(
            f"--split-file {path}: {len(shared)} stem(s) name several labelled samples of "
            f"{plan.name}, e.g. {shared[0]!r}: "
            + ", ".join(f"{s.split} {s.image or s.mask}" for s in found[:3]),
            hint="a split file needs stems that are unique across the raw splits",
        )
    chosen = {stem: split for split, stems in split_file.splits.items() for stem in stems}
    unknown = [stem for stem in chosen if stem not in labelled]
    if unknown:
        raise ConfigError(
            f"--split-file {path} lists {len(unknown)} stem(s) that are no labelled sample of "
            f"{plan.name}: {shortened([repr(stem) for stem in unknown])}",
            hint="check that the file belongs to this raw dataset (stems are file names "
            "without extension; images without masks cannot be placed)",
        )
    unlisted = sorted(stem for stem in labelled if stem not in chosen)
    if unlisted:
        raise ConfigError(
            f"--split-file {path} leaves out {len(unlisted)} labelled sample(s) of "
            f"{plan.name}: {shortened([repr(stem) for stem in unlisted])}",
            hint="list every labelled sample in one split of the file, or remove those samples "
            "from the raw folder",
        )
    unlabelled = {(s.split, s.stem) for s in plan.samples if s.mask is None}
    clash = next((stem for stem in labelled if (chosen[stem], stem) in unlabelled), None)
    if clash is not None:
        raise ConfigError(
            f"--split-file {path} puts {clash!r} into {chosen[clash]!r}, which also holds an "
            "image without a mask of that name",
            hint=f"give that split of the file another name than {chosen[clash]!r}",
        )
    moved: dict[tuple[str, str], str] = {}
    for stem, (sample,) in labelled.items():
        if sample.split != chosen[stem]:
            moved[(chosen[stem], stem)] = sample.split
            sample.split = chosen[stem]
    if moved:
        if plan.read_mask is not None:
            plan.read_mask = _ReadInPreparedSplit(plan.read_mask, moved)
        if plan.read_image is not None:
            plan.read_image = _ReadInPreparedSplit(plan.read_image, moved)
    counts = {split: sum(s.split == split for s in plan.samples) for split in split_file.splits}
    # The preparer's own split note no longer describes the dataset.
    plan.notes = [note for note in plan.notes if not note.startswith("validation split")]
    plan.notes.append(
        f"split from {path.name}: " + ", ".join(f"{n} {split}" for split, n in counts.items())
    )


@dataclass(frozen=True)
class _ReadInPreparedSplit:
    """A plan's reader that sees each sample in the split its preparer gave it: what a sample
    holds may depend on its split (generated data does), and a split file moves only where
    the sample is written. A class, not a closure: it goes to the worker processes."""

    read: Callable[[Sample], np.ndarray]
    # (split in the file, stem) -> split the preparer gave, for the samples the file moved
    prepared_splits: dict[tuple[str, str], str]

    def __call__(self, sample: Sample) -> np.ndarray:
        prepared = self.prepared_splits.get((sample.split, sample.stem), sample.split)
        return self.read(replace(sample, split=prepared))


def _aborted(exc: BaseException, out: Path, existed: bool) -> BaseException:
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
def _interrupts_held() -> Iterator[None]:
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
    others = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        workers, initializer=_init_worker, initargs=(plan, temporary, os.getpid())
    )
    try:
        for done, result in enumerate(pool.map(_process, plan.samples, chunksize=chunk), 1):
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


def _contested_rows(plan: DatasetPlan, results: list[_SampleResult]) -> list[dict[str, Any]]:
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


def _swap_into_place(temporary: Path, out: Path) -> None:
    """Rename the finished dataset into place; an old one is removed only after that succeeded
    (and put back if it did not)."""
    if not (out.exists() or out.is_symlink()):
        os.replace(temporary, out)
        return
    retired = out.parent / f".{out.name}.old-{os.getpid()}"
    _remove(retired)
    os.replace(out, retired)
    try:
        os.replace(temporary, out)
    except BaseException:
        os.replace(retired, out)
        raise
    _remove(retired)


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
