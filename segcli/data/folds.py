"""Cross-validation folds over a prepared dataset: the labelled images they are made of, and
the image files a fold trains or validates on (`dataset.folds` and `dataset.fold`), which then
replace the configuration's train and validation splits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from segcli.config import RunConfig
from segcli.data.format import DatasetInfo, check_mask_values, split_files
from segcli.errors import DataError
from segcli.runs.cross_validation import Folds, assign_folds, check_fold, read_folds

Pair = tuple[Path, Path]  # (image file, mask file)


def labelled_images(root: Path, splits: tuple[str, ...], info: DatasetInfo) -> dict[str, Pair]:
    """`split/stem` -> (image, mask) of every labelled image of `splits` (those present)."""
    found: dict[str, Pair] = {}
    for split in splits:
        if split not in info.labelled_splits:
            continue
        for image, mask in split_files(root, split, info):
            if mask is not None:
                found[f"{split}/{image.stem}"] = (image, mask)
    return found


def make_folds(
    root: Path, info: DatasetInfo, config: RunConfig, count: int, seed: int, *, hold_out_val: bool
) -> Folds:
    """`count` seeded folds over the labelled images of the configuration's train and
    validation splits, or of its train split alone (`hold_out_val`: the validation split
    then judges the folds and their ensemble on images none of them trained on)."""
    named = (config.dataset.train_split, *(() if hold_out_val else (config.dataset.val_split,)))
    splits = tuple(dict.fromkeys(named))
    return assign_folds(list(labelled_images(root, splits, info)), count, seed, splits)


def fold_pairs(
    config: RunConfig, root: Path, info: DatasetInfo, part: Literal["train", "val"]
) -> list[Pair] | None:
    """The (image, mask) files fold `dataset.fold` of `dataset.folds` trains (`part="train"`)
    or validates on; None for a run that is not a fold."""
    if config.dataset.fold is None or config.dataset.folds is None:
        return None
    return pairs_of_fold(Path(config.dataset.folds), config.dataset.fold, root, info, part)


def pairs_of_fold(
    folds_file: Path, fold: int, root: Path, info: DatasetInfo, part: Literal["train", "val"]
) -> list[Pair]:
    """The (image, mask) files of the prepared dataset at `root` that fold `fold` of the folds
    file trains or validates on, their masks checked against dataset.json."""
    folds = read_folds(folds_file)
    check_fold(folds.count, fold)
    for split in folds.splits:
        if split in info.labelled_splits:
            check_mask_values(root, split, info)
    files = labelled_images(root, folds.splits, info)
    ids = (folds.training_ids if part == "train" else folds.validation_ids)(fold)
    missing = [image_id for image_id in ids if image_id not in files]
    if missing:
        raise DataError(
            f"{root} has no labelled image {missing[0]} ({len(missing)} of fold {fold}'s "
            f"missing), which {folds_file} lists",
            hint="use the dataset the folds were made from (its path is in the folds file)",
        )
    return [files[image_id] for image_id in ids]
