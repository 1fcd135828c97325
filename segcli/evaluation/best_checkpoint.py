"""A run's checkpoint evaluated again on the labelled validation split it was trained with:
what `segcli report` shows of a run besides its records (the worst predictions and, when the
metrics did not record one, the confusion matrix).

It predicts exactly as `segcli predict` does, through the one evaluation loop
(`segcli.evaluation.split.evaluate_split`), on the dataset folder the checkpoint records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli.errors import DataError
from segcli.evaluation.scores import ImageRecord
from segcli.evaluation.split import evaluate_split, evenly_spaced, labelled_pairs

DEFAULT_WORST = 6
# Evaluating on CPU costs about a second per large image: enough images to find the bad ones
# without making the end of a training run or `segcli report` wait minutes.
DEFAULT_MAX_IMAGES = 200


@dataclass
class CheckpointEvaluation:
    """A run's checkpoint evaluated again on (part of) its validation split."""

    split: str
    evaluated: int
    total: int
    worst: list[ImageRecord]
    confusion: np.ndarray


def evaluate_best(
    run_dir: Path,
    checkpoint: Path,
    dataset: Path | None,
    *,
    worst: int = DEFAULT_WORST,
    max_images: int = DEFAULT_MAX_IMAGES,
    device: str = "cpu",
) -> CheckpointEvaluation:
    """Predict (part of) the validation split of `dataset`, the folder `checkpoint` of the run
    in `run_dir` records, keeping the `worst` images by mean IoU and the confusion matrix.

    More than `max_images` images (0: no limit) are thinned to evenly spaced ones. A
    DataError when the checkpoint records no dataset or the dataset is not where it was."""
    from segcli.config import build_config
    from segcli.data.folds import fold_pairs
    from segcli.data.format import read_dataset_info
    from segcli.inference.predictor import Predictor

    dataset_dir = checked_dataset(run_dir, checkpoint, dataset)
    predictor = Predictor(checkpoint, device)
    split = predictor.config.dataset.val_split
    # a cross-validation fold is shown the images it held out, from the folds file its
    # config.toml names (relative to the run folder: found after the run is moved)
    run_config = build_config(config_file=Path(run_dir) / "config.toml")
    held_out = fold_pairs(run_config, dataset_dir, read_dataset_info(dataset_dir), "val")
    pairs = held_out or labelled_pairs(dataset_dir, split)
    chosen = evenly_spaced(pairs, max_images)
    evaluation = evaluate_split(
        predictor, dataset_dir, split, pairs=chosen, metrics={}, worst=worst
    )
    return CheckpointEvaluation(
        split, len(chosen), len(pairs), evaluation.worst, evaluation.confusion
    )


def checked_dataset(run_dir: Path, checkpoint: Path, dataset: Path | None) -> Path:
    """The dataset folder the run's checkpoint was trained on; a DataError saying so when
    the checkpoint does not record one or nothing is there any more."""
    if dataset is None:
        raise DataError(
            f"{checkpoint} does not record the dataset folder it was trained on",
            hint="train the run again with this segcli, or score it with "
            f"`segcli evaluate DATASET --checkpoint {checkpoint}`",
        )
    if not (dataset / "dataset.json").is_file():
        raise DataError(
            f"the dataset of run {run_dir} is no longer at {dataset} (moved or deleted)",
            hint=f"move it back, or score the run with `segcli evaluate NEW_PLACE --checkpoint "
            f"{checkpoint}`",
        )
    return dataset
