"""A cross-validation run on disk: the folds file, one ordinary run folder per fold, and the
parent's summary of the folds' scores, all read back without torch.

Layout (`segcli train --folds K`, docs/training.md#cross-validation)::

    RUN/folds.json        the seed and, per fold, the image ids it trains and validates on
    RUN/config.toml       the configuration every fold shares (each fold adds dataset.fold)
    RUN/summary.json      each fold's monitored score, their mean and standard deviation
    RUN/post_processing.json  what the ensemble applies (two-class runs): chosen on the
                          out-of-fold predictions, with the metric before and after
    RUN/fold-K/           an ordinary run: config.toml, checkpoints, metrics, summary.json

An image id is `split/stem` of the prepared dataset (`train/img_003`): ids of the train and
validation splits are pooled and dealt out to the folds.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.errors import DataError, UsageError
from segcli.files import atomic_write
from segcli.json_files import read_json
from segcli.runs.checkpoint_file import SUFFIX
from segcli.runs.metrics import read_summary

FOLDS_FILE = "folds.json"
ENSEMBLE_POST_PROCESSING_FILE = "post_processing.json"
FOLDS_VERSION = 1


@dataclass(frozen=True)
class Folds:
    """Which images each fold holds out: fold k validates on `held_out[k]` and trains on the
    ids of every other fold."""

    seed: int
    splits: tuple[str, ...]  # the prepared splits the ids come from
    held_out: tuple[tuple[str, ...], ...]

    @property
    def count(self) -> int:
        return len(self.held_out)

    def validation_ids(self, fold: int) -> tuple[str, ...]:
        return self.held_out[fold]

    def training_ids(self, fold: int) -> tuple[str, ...]:
        return tuple(sorted(i for k, ids in enumerate(self.held_out) if k != fold for i in ids))

    def to_json(self, dataset: str) -> dict[str, Any]:
        return {
            "version": FOLDS_VERSION,
            "seed": self.seed,
            "dataset": dataset,
            "splits": list(self.splits),
            "folds": [
                {"fold": k, "train": list(self.training_ids(k)), "val": list(ids)}
                for k, ids in enumerate(self.held_out)
            ],
        }


def assign_folds(ids: list[str], count: int, seed: int, splits: tuple[str, ...]) -> Folds:
    """`count` folds of `ids`, dealt out in an order shuffled by `seed`: disjoint, covering
    every id, their sizes differing by one at most. The same ids and seed give the same folds."""
    check_fold_count(count)
    if count > len(ids):
        raise UsageError(
            f"--folds {count} is more folds than the {len(ids)} labelled image(s) of the "
            f"{' and '.join(splits)} split(s): each fold validates on one image at least",
            hint=f"use --folds {len(ids)} or fewer",
        )
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    held_out = tuple(tuple(sorted(order[k::count])) for k in range(count))
    return Folds(seed, splits, held_out)


def write_folds(path: Path, folds: Folds, dataset: str) -> None:
    with atomic_write(path) as stream:
        stream.write((json.dumps(folds.to_json(dataset), indent=2) + "\n").encode())


def read_folds(path: Path) -> Folds:
    """The folds file at `path`; a DataError naming it when it is missing or damaged."""
    hint = "it is written by `segcli train --folds K`: train the cross-validation again"
    if not Path(path).is_file():
        raise DataError(f"folds file {path} does not exist", hint=hint)
    data = read_json(path, "folds file", hint=hint)
    try:
        held_out = tuple(tuple(str(i) for i in fold["val"]) for fold in data["folds"])
        folds = Folds(int(data["seed"]), tuple(str(s) for s in data["splits"]), held_out)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"folds file {path} is damaged ({exc!r:.60})", hint=hint) from None
    every = [i for ids in held_out for i in ids]
    if len(held_out) < 2 or len(set(every)) != len(every):
        raise DataError(f"folds file {path}: its folds must be 2 or more and disjoint", hint=hint)
    return folds


def is_cross_validation(run: Path) -> bool:
    return (Path(run) / FOLDS_FILE).is_file()


def fold_dir(run: Path, fold: int) -> Path:
    return Path(run) / f"fold-{fold}"


def cross_validation_of(run: Path) -> Path | None:
    """The cross-validation run that `run` is a fold of: its parent folder, when that holds a
    folds file and `run` is one of its `fold-k` folders; None for any other run."""
    run = Path(os.path.abspath(run))  # `--resume .` from inside the fold
    parent = run.parent
    if not is_cross_validation(parent):
        return None
    folds = read_folds(parent / FOLDS_FILE)
    return parent if any(run == fold_dir(parent, k) for k in range(folds.count)) else None


def check_fold_count(count: int) -> None:
    if count < 2:
        raise UsageError(
            f"--folds {count}: cross-validation needs at least 2 folds",
            hint="use --folds 5 (nnU-Net's habit), or leave --folds out for one run",
        )


def check_fold(count: int, fold: int) -> None:
    """Refuse a fold number outside 0 to `count` - 1."""
    if not 0 <= fold < count:
        raise UsageError(
            f"fold {fold} is out of range: this cross-validation has folds 0 to {count - 1}",
            hint=f"give --fold 0 to {count - 1} (dataset.fold in a configuration)",
        )


def with_folds(run: Path) -> list[Path]:
    """`run`, followed by its fold runs (those started) when it is a cross-validation: what a
    report of it shows side by side."""
    if not is_cross_validation(run):
        return [Path(run)]
    folds = read_folds(Path(run) / FOLDS_FILE)
    started = [fold_dir(run, k) for k in range(folds.count)]
    return [Path(run), *(path for path in started if (path / "config.toml").is_file())]


def fold_checkpoints(run: Path) -> list[Path]:
    """The `best` checkpoint of every fold of a cross-validation run, in fold order; an error
    saying which folds are missing, and how to train them, when not all are trained."""
    run = Path(run)
    if not is_cross_validation(run):
        raise UsageError(
            f"{run} is not a cross-validation run (it has no {FOLDS_FILE})",
            hint="train one with `segcli train --data DIR --folds 5`, or give one model with "
            "--checkpoint",
        )
    folds = read_folds(run / FOLDS_FILE)
    paths = [fold_dir(run, k) / f"best{SUFFIX}" for k in range(folds.count)]
    missing = [k for k, path in enumerate(paths) if not path.is_file()]
    if missing:
        listed = ", ".join(str(k) for k in missing)
        raise UsageError(
            f"{run}: fold(s) {listed} of {folds.count} have no best checkpoint yet",
            hint=f"train them: segcli train --resume {run} (or --fold {missing[0]})",
        )
    return paths


def summarise_folds(run: Path) -> dict[str, Any]:
    """The parent run's summary: each fold's best monitored score (None: not trained to the
    end yet), and the mean and sample standard deviation of those there are."""
    run = Path(run)
    folds = read_folds(run / FOLDS_FILE)
    rows: list[dict[str, Any]] = []
    monitor = mode = None
    for k in range(folds.count):
        summary = read_summary(fold_dir(run, k))
        monitor = monitor or summary.get("monitor")
        mode = mode or summary.get("mode")
        rows.append(
            {
                "fold": k,
                "run": fold_dir(run, k).name,
                "images": {
                    "train": len(folds.training_ids(k)),
                    "val": len(folds.validation_ids(k)),
                },
                "best": summary.get("best"),
                "best_epoch": summary.get("best_epoch"),
                "seconds": summary.get("seconds", {}).get("total"),
            }
        )
    scores = [row["best"] for row in rows if isinstance(row["best"], (int, float))]
    scores = [score for score in scores if math.isfinite(score)]
    return {
        "cross_validation": {"folds": folds.count, "seed": folds.seed},
        "monitor": monitor,
        "mode": mode,
        "folds": rows,
        "trained": len(scores),
        "mean": statistics.fmean(scores) if scores else None,
        "sd": statistics.stdev(scores) if len(scores) > 1 else None,
        "post_processing": read_ensemble_post_processing(run),
    }


def write_ensemble_post_processing(run: Path, record: dict[str, Any]) -> None:
    """Keep what the ensemble of `run`'s folds applies: `record` has the rules (None: none
    improved the metric), their description, the monitor and its value before and after."""
    with atomic_write(Path(run) / ENSEMBLE_POST_PROCESSING_FILE) as stream:
        stream.write(json.dumps(record, indent=2).encode())


def read_ensemble_post_processing(run: Path) -> dict[str, Any] | None:
    """What `write_ensemble_post_processing` kept; None before the folds are all trained."""
    path = Path(run) / ENSEMBLE_POST_PROCESSING_FILE
    if not path.is_file():
        return None
    record = read_json(path, "the ensemble's post-processing")
    if not isinstance(record, dict):
        raise DataError(
            f"{path} is damaged: not a JSON object",
            hint="delete it: the ensemble then applies no post-processing",
        )
    return record


def write_folds_summary(run: Path) -> None:
    """Write the parent run's summary.json from its folds' summaries."""
    with atomic_write(Path(run) / "summary.json") as stream:
        stream.write(json.dumps(summarise_folds(run), indent=2).encode())
