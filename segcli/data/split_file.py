"""`--split-file`: a JSON file that places each labelled sample in a split by its stem."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from segcli.data.format import check_split_name
from segcli.data.plan import DatasetPlan, Sample
from segcli.errors import (
    ConfigError,
    shortened,
)
from segcli.json_files import parse_json

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
