"""Choosing a two-class model's post-processing on validation predictions: first the
test-time flips (when the training augmentation mirrored the images), then one rule at a time
(the threshold, the smallest region kept, the empty-image share), each kept only when it
improves the monitored metric by more than `MIN_GAIN`: a choice that merely fits the noise of
one validation set is left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segcli.building import build_metrics
from segcli.evaluation.cross_validation import out_of_fold_pairs
from segcli.evaluation.scores import Scoring
from segcli.evaluation.split import evaluate_split, labelled_pairs
from segcli.inference.postprocessing import PostProcessing
from segcli.inference.predictor import TTA_VIEWS, Predictor
from segcli.runs.checkpoint_file import load_checkpoint, save_checkpoint
from segcli.runs.cross_validation import fold_checkpoints

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
# shares of an image's pixels: 1e-3 is 10 px of a 101x101 image, 1000 px of a 1000x1000 one
COMPONENT_SHARES = (0.0, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
EMPTY_SHARES = (0.0, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 4e-2)
MIN_GAIN = 1e-3
# validation pixels whose probabilities are held for the search (float16: 2 bytes each)
LEARNING_PIXELS = 64_000_000


@dataclass(frozen=True)
class Choice:
    """The post-processing chosen (test-time augmentation, then rules), and the monitored
    metric before and after it."""

    rules: PostProcessing
    before: float
    after: float
    tta: str = "none"

    def summary(self, monitor: str, default: PostProcessing) -> dict[str, Any]:
        """The choice for a run's summary: the test-time augmentation, the rules (None when
        they are `default`, the plain threshold), and `monitor` before and after."""
        kept = self.rules != default
        chosen = [f"test-time {self.tta}"] if self.tta != "none" else []
        if kept:
            chosen.append(self.rules.describe())
        return {
            "rules": self.rules.to_json() if kept else None,
            "tta": self.tta,
            "description": ", ".join(chosen) or "none improved the metric",
            "monitor": monitor,
            "before": self.before,
            "after": self.after,
        }


def flips_to_try(augment: dict[str, Any]) -> tuple[str, ...]:
    """The test-time augmentation worth trying for a model trained with `augment`: horizontal
    flips when it saw mirrored images. Not vertical ones, even when it saw those too: on ISBI
    (trained with both) they lowered membrane Dice (0.801 -> 0.799, horizontal alone 0.803)."""
    mirrored = "hflip" in augment and (augment["hflip"] or {}).get("p", 0.5) > 0
    return ("flip",) if mirrored else ()


# the monitored metric of a list of predicted masks; or it, then the guarded metrics (higher
# is better), which a choice must not lower by more than MIN_GAIN
Score = Callable[[Sequence[np.ndarray]], float | tuple[float, ...]]


def choose_post_processing(
    foregrounds: Sequence[np.ndarray],
    score: Score,
    *,
    threshold: float = 0.5,
    maximize: bool = True,
    seconds: float | None = None,
    floor: tuple[float, ...] | None = None,
) -> Choice:
    """The rules that best improve `score` (see Score) over plain `threshold`, one rule at a
    time: the threshold, then the smallest region, then the empty-image share. `foregrounds`
    are (H, W) foreground probabilities of the validation images at their own size. A rule is
    kept only when it improves the monitored metric by more than MIN_GAIN and keeps each
    guarded one at or above `floor` (by default: its plain-threshold value less MIN_GAIN).
    With `seconds`, a rule is tried only while its candidates fit in them at the pace of the
    scores so far; the rules chosen until then stand."""
    started = time.perf_counter()
    sign = 1.0 if maximize else -1.0
    scored = 0

    def value(rules: PostProcessing) -> tuple[float, tuple[float, ...]]:
        nonlocal scored
        scored += 1
        return _signed(score([rules.decide(f) for f in foregrounds]), sign)

    best = PostProcessing(threshold=threshold)
    before, guarded = value(best)
    best_value = before
    if floor is None:
        floor = tuple(kept - MIN_GAIN for kept in guarded)
    for field, candidates in (
        ("threshold", THRESHOLDS),
        ("min_region_share", COMPONENT_SHARES),
        ("empty_below_share", EMPTY_SHARES),
    ):
        tried = [replace(best, **{field: c}) for c in candidates if c != getattr(best, field)]
        spent = time.perf_counter() - started
        if seconds is not None and spent + spent / scored * len(tried) > seconds:
            break
        allowed = [
            (monitored, rules)
            for rules in tried
            for monitored, kept in [value(rules)]
            if _within(kept, floor)
        ]
        if not allowed:
            continue
        # the best monitored value, the earlier candidate on a tie
        top_value, top_rules = max(allowed, key=lambda pair: pair[0])
        if top_value > best_value + MIN_GAIN:
            best, best_value = top_rules, top_value
    return Choice(best, sign * before, sign * best_value)


def _signed(result: float | tuple[float, ...], sign: float) -> tuple[float, tuple[float, ...]]:
    """A Score's result as (sign x the monitored value, the guarded values)."""
    monitored, *guarded = result if isinstance(result, tuple) else (result,)
    return sign * monitored, tuple(guarded)


def _within(guarded: tuple[float, ...], floor: tuple[float, ...]) -> bool:
    return all(value >= lowest for value, lowest in zip(guarded, floor, strict=True))


@dataclass(frozen=True)
class ChoiceImages:
    """The validation images post-processing is chosen on, as its cost needs them: how many,
    and their pixels at their own size."""

    count: int
    pixels: int


def choice_images(pairs: Sequence[tuple[Path, Path]]) -> ChoiceImages:
    """The images of `pairs` a choice is made by (up to LEARNING_PIXELS), from their masks'
    headers."""
    chosen = _enough_to_choose_by(pairs, 1)
    return ChoiceImages(len(chosen), sum(_pixels(mask) for _, mask in chosen))


def learn_post_processing(
    checkpoint: Path,
    dataset_dir: Path,
    split: str,
    *,
    pairs: Sequence[tuple[Path, Path]] | None = None,
    monitor: str,
    maximize: bool,
    device: str = "auto",
    seconds: float | None = None,
) -> Choice | None:
    """The post-processing a two-class checkpoint's predictions on `split` (or on `pairs`, a
    cross-validation fold's validation images) call for, judged by its `monitor` metric at the
    images' own size: test-time flips, then the rules; None for a model of more classes or a
    monitor no metric plugin gives. With `seconds` (what is left of a time budget), flips are
    tried only when the plain prediction's time says they fit in it."""
    predictor = Predictor(checkpoint, device, tta="none", post_processing=False)
    return _choose(
        [(predictor, pairs or labelled_pairs(dataset_dir, split))],
        dataset_dir,
        split,
        monitor=monitor,
        maximize=maximize,
        seconds=seconds,
    )


def learn_ensemble_post_processing(
    run: Path, dataset_dir: Path, *, monitor: str, maximize: bool, device: str = "auto"
) -> Choice | None:
    """The post-processing for the ensemble of a cross-validation `run`'s folds, chosen as
    nnU-Net does on the out-of-fold predictions: each image predicted by the fold that held it
    out, all of them pooled (each fold's own rules saw a fifth of the images)."""
    predictors = [
        Predictor(checkpoint, device, tta="none", post_processing=False)
        for checkpoint in fold_checkpoints(run)
    ]
    held_out = out_of_fold_pairs(run, dataset_dir)
    return _choose(
        list(zip(predictors, held_out, strict=True)),
        dataset_dir,
        "out-of-fold",
        monitor=monitor,
        maximize=maximize,
    )


def _choose(
    sources: Sequence[tuple[Predictor, Sequence[tuple[Path, Path]]]],
    dataset_dir: Path,
    split: str,
    *,
    monitor: str,
    maximize: bool,
    seconds: float | None = None,
) -> Choice | None:
    """Test-time flips, then rules, chosen on what each predictor predicts of its (image, mask)
    pairs, pooled; flips only while they fit in `seconds` (None: no limit)."""
    started = time.perf_counter()
    predictor = sources[0][0]
    keys = [monitor, *predictor.config.train.post_process_guard]
    metrics = build_metrics(predictor.config, predictor.dataset_info())
    plugins = {key.split("/", 1)[0] for key in keys}
    if predictor.num_classes != 2 or not plugins <= metrics.keys():
        return None
    metrics = {name: metrics[name] for name in plugins}
    held = [(source, _enough_to_choose_by(pairs, len(sources))) for source, pairs in sources]
    truths, plain = _view_foregrounds(held, (), dataset_dir, split)
    labels = [torch.from_numpy(truth).long()[None] for truth in truths]

    def score(masks: Sequence[np.ndarray]) -> tuple[float, ...]:
        scoring = Scoring(metrics)
        for mask, truth in zip(masks, labels, strict=True):
            scoring.add_batch(torch.from_numpy(mask).long()[None], truth)
        scores = scoring.metric_scores()
        return tuple(float(scores[key]) for key in keys)

    sign = 1.0 if maximize else -1.0
    threshold = PostProcessing(threshold=predictor.rules.threshold)

    def value(foregrounds: Sequence[np.ndarray]) -> tuple[float, tuple[float, ...]]:
        return _signed(score([threshold.decide(f) for f in foregrounds]), sign)

    before, guarded = value(plain)
    best_value = before
    floor = tuple(kept - MIN_GAIN for kept in guarded)  # no choice below the plain one
    one_view = time.perf_counter() - started
    best_tta, best_foregrounds = "none", plain
    for tta in flips_to_try(predictor.config.augment):
        more_views = [dims for dims in TTA_VIEWS[tta] if dims]
        spent = time.perf_counter() - started
        if seconds is not None and spent + one_view * len(more_views) > seconds:
            continue  # the budget ends first: what was chosen so far stands
        foregrounds = _flipped_average(held, plain, more_views, dataset_dir, split)
        flipped, kept = value(foregrounds)
        if flipped > best_value + MIN_GAIN and _within(kept, floor):
            best_tta, best_value, best_foregrounds = tta, flipped, foregrounds
    left = None if seconds is None else seconds - (time.perf_counter() - started)
    rules = choose_post_processing(
        best_foregrounds, score, threshold=threshold.threshold, maximize=maximize,
        seconds=left, floor=floor,
    )  # fmt: skip
    return replace(rules, before=sign * before, tta=best_tta)


def _enough_to_choose_by(
    pairs: Sequence[tuple[Path, Path]], sources: int
) -> list[tuple[Path, Path]]:
    """The first of `pairs` up to LEARNING_PIXELS (shared among `sources`): the rest would
    only cost memory and time."""
    chosen, held = [], 0
    for image_path, mask_path in pairs:
        chosen.append((image_path, mask_path))
        held += _pixels(mask_path)
        if held >= LEARNING_PIXELS // sources:
            break
    return chosen


def _view_foregrounds(
    held: Sequence[tuple[Predictor, Sequence[tuple[Path, Path]]]],
    flip_dims: tuple[int, ...],
    dataset_dir: Path,
    split: str,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each image's truth and (H, W) float16 foreground probabilities at its own size, every
    predictor's pairs in turn, predicted from one view of the input: flipped along
    `flip_dims` (none: the plain image)."""
    truths: list[np.ndarray] = []
    foregrounds: list[np.ndarray] = []

    def foreground_of(shape: tuple[int, int]) -> np.ndarray:
        foregrounds.append(np.empty(shape, np.float16))
        return foregrounds[-1]

    for source, pairs in held:
        source.views = [flip_dims]
        evaluate_split(
            source, dataset_dir, split, pairs=pairs, metrics={},
            on_image=lambda record: truths.append(record.truth), foreground=foreground_of,
        )  # fmt: skip
    return truths, foregrounds


def _flipped_average(
    held: Sequence[tuple[Predictor, Sequence[tuple[Path, Path]]]],
    plain: Sequence[np.ndarray],
    flip_dims: Sequence[tuple[int, ...]],
    dataset_dir: Path,
    split: str,
) -> list[np.ndarray]:
    """The foregrounds a test-time augmentation of the plain view and the `flip_dims` views
    predicts: only the flipped views are predicted again, and the average is taken at the
    images' own size, as the Predictor's at the model's is (bilinear resizing is linear)."""
    total = [foreground.astype(np.float32) for foreground in plain]
    for dims in flip_dims:
        for summed, foreground in zip(
            total, _view_foregrounds(held, dims, dataset_dir, split)[1], strict=True
        ):
            summed += foreground
    return [(summed / (1 + len(flip_dims))).astype(np.float16) for summed in total]


def _pixels(mask_path: Path) -> int:
    with Image.open(mask_path) as mask:
        return mask.width * mask.height


def record_post_processing(
    checkpoint: Path, rules: PostProcessing | None, tta: str = "none"
) -> None:
    """Write the chosen `rules` (None: the plain threshold) and test-time augmentation into a
    checkpoint's metadata, in place of any chosen before, where predict, evaluate and export
    find them."""
    saved = load_checkpoint(checkpoint)
    meta = {
        key: value for key, value in saved.meta.items() if key not in ("post_processing", "tta")
    }
    if rules is not None:
        meta["post_processing"] = rules.to_json()
    if tta != "none":
        meta["tta"] = tta
    if meta != saved.meta:
        save_checkpoint(checkpoint, saved.model_state, meta)
