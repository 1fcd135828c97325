"""Cross-validation: a parent run holding seeded folds over a prepared dataset's train and
validation images, and one ordinary run per fold (`fold-K/`, trained by `fit` like any other),
so that predict, evaluate, report and `--resume` read a fold as they read any run. The layout
on disk is `segcli.runs.cross_validation`'s; the ensemble of the folds is
`segcli.inference.predictor`'s and their out-of-fold scores `segcli.evaluation.cross_validation`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.config import RunConfig, build_config
from segcli.data.folds import make_folds
from segcli.data.format import read_dataset_info
from segcli.errors import UsageError
from segcli.evaluation.postprocess_search import learn_ensemble_post_processing
from segcli.inference.postprocessing import PostProcessing
from segcli.json_files import read_json
from segcli.runs.checkpoint_file import SUFFIX
from segcli.runs.cross_validation import (
    FOLDS_FILE,
    check_fold,
    fold_dir,
    read_folds,
    write_ensemble_post_processing,
    write_folds,
    write_folds_summary,
)
from segcli.runs.folders import (
    PLAN_FILE,
    create_run_dir,
    discard_run_without_checkpoint,
    record_run,
)
from segcli.training.setup import ensure_dataset


@dataclass(frozen=True)
class FoldRun:
    """One fold to train: a new run from `config` in `run_dir` (with the parent's `plan`, for
    a planned one), or (`config` None) the run already in `run_dir` resumed from its `last`
    checkpoint."""

    fold: int
    run_dir: Path
    config: RunConfig | None
    plan: dict[str, Any] | None = None


def fold_budget(seconds: float, count: int) -> float:
    """Each fold's `train.max_time` when the whole cross-validation is given `seconds`."""
    return seconds / count


def start_cross_validation(
    config: RunConfig,
    count: int,
    plan: dict[str, Any] | None = None,
    *,
    hold_out_val: bool = False,
) -> Path:
    """A new parent run for `count` folds of `config`'s dataset (its train and validation
    images, or with `hold_out_val` its train images alone), seeded by `train.seed`: its
    folds.json, the shared config.toml (and plan.json of a planned run). A fold count the
    images cannot fill is refused before the folder is made."""
    root = ensure_dataset(config)
    info = read_dataset_info(root)
    seed = config.train.seed
    folds = make_folds(root, info, config, count, seed, hold_out_val=hold_out_val)
    parent = create_run_dir(config)
    record_run(parent, config, plan)
    write_folds(parent / FOLDS_FILE, folds, str(root.resolve()))
    return parent


def shared_config(parent: Path) -> RunConfig:
    """The configuration every fold of a parent run shares (its config.toml)."""
    return build_config(config_file=Path(parent) / "config.toml")


def fold_config(config: RunConfig, parent: Path, fold: int) -> RunConfig:
    """`config` as fold `fold` of `parent` trains it: on that fold's images, inside `parent`."""
    made = config.model_copy(deep=True)
    made.dataset = made.dataset.model_copy(
        update={"folds": str((Path(parent) / FOLDS_FILE).resolve()), "fold": fold}
    )
    made.runs_dir = str(parent)
    return made


def folds_to_train(parent: Path, config: RunConfig, only: int | None = None) -> list[FoldRun]:
    """The folds of `parent` still to train (all, or fold `only`), in order: folds never
    started are new runs, folds stopped before their end (Ctrl-C, a crash) are resumed, and
    finished ones are left alone; an error when nothing is left to train."""
    folds = read_folds(Path(parent) / FOLDS_FILE)
    if only is not None:
        check_fold(folds.count, only)
    plan_file = Path(parent) / PLAN_FILE
    plan = read_json(plan_file, "plan") if plan_file.is_file() else None
    to_train = []
    for fold in range(folds.count) if only is None else [only]:
        run_dir = fold_dir(parent, fold)
        if (run_dir / "summary.json").is_file():
            if only is not None:
                raise UsageError(
                    f"fold {fold} of {parent} is trained already",
                    hint=f"give it more time with `segcli train --resume {run_dir} --time +5m`",
                )
            continue
        if (run_dir / f"last{SUFFIX}").is_file():
            to_train.append(FoldRun(fold, run_dir, None))
            continue
        if run_dir.exists():
            discard_run_without_checkpoint(run_dir)  # what a kill before its first epoch left
        to_train.append(FoldRun(fold, run_dir, fold_config(config, parent, fold), plan))
    if not to_train:
        raise UsageError(
            f"every fold of {parent} is trained already",
            hint=f"give a fold more time: `segcli train --resume {fold_dir(parent, 0)} --time +5m`",
        )
    return to_train


def choose_ensemble_post_processing(parent: Path) -> dict[str, Any] | None:
    """Once every fold of `parent` is trained, the post-processing its ensemble applies
    (`segcli predict --ensemble`), chosen on the out-of-fold predictions and written to the
    parent (two-class runs, `train.post_process` on): what was chosen, for the summary."""
    parent = Path(parent)
    config = shared_config(parent)
    count = read_folds(parent / FOLDS_FILE).count
    trained = all((fold_dir(parent, k) / "summary.json").is_file() for k in range(count))
    if not (trained and config.train.post_process):
        return None
    started = time.perf_counter()
    choice = learn_ensemble_post_processing(
        parent,
        ensure_dataset(config),
        monitor=config.train.monitor,
        maximize=config.train.monitor_mode == "max",
        device=config.train.device,
    )
    if choice is None:
        return None
    record = choice.summary(config.train.monitor, PostProcessing(threshold=config.train.threshold))
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_ensemble_post_processing(parent, record)
    return record


def update_folds_summary(parent: Path) -> None:
    """After a fold of `parent` trained, anew or resumed: the parent's summary.json rewritten
    from its folds' summaries and, when every fold is trained, the ensemble's post-processing
    chosen (again, when a fold was extended) and added to it."""
    write_folds_summary(parent)
    if choose_ensemble_post_processing(parent) is not None:
        write_folds_summary(parent)
