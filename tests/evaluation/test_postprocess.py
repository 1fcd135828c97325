"""Post-processing chosen on validation predictions: each rule does what it says, and is kept
only when it improves the monitored metric."""

import numpy as np
import pytest

from segcli.evaluation.postprocess_search import choose_post_processing
from segcli.inference.postprocessing import PostProcessing


def iou(masks, truths) -> float:
    intersection = sum(int(np.sum((m == 1) & (t == 1))) for m, t in zip(masks, truths, strict=True))
    union = sum(int(np.sum((m == 1) | (t == 1))) for m, t in zip(masks, truths, strict=True))
    return intersection / union if union else 1.0


def empty_aware(masks, truths) -> float:
    """1 for an empty image predicted empty, else the image's IoU (as TGS's score does)."""
    scores = []
    for mask, truth in zip(masks, truths, strict=True):
        union = np.sum((mask == 1) | (truth == 1))
        scores.append(1.0 if union == 0 else np.sum((mask == 1) & (truth == 1)) / union)
    return float(np.mean(scores))


def blob(size=100, top=20, left=20, side=40) -> np.ndarray:
    truth = np.zeros((size, size), np.uint8)
    truth[top : top + side, left : left + side] = 1
    return truth


def test_small_regions_are_dropped_and_large_ones_kept():
    mask = blob()
    mask[90:92, 90:92] = 1  # a 4-px speck: 0.04 % of the image
    cleaned = PostProcessing(min_region_share=1e-3).clean(mask)
    assert cleaned[90:92, 90:92].sum() == 0
    assert np.array_equal(cleaned, blob())


def test_too_little_foreground_makes_the_image_empty():
    mask = np.zeros((100, 100), np.uint8)
    mask[:3, :3] = 1  # 0.09 %
    assert PostProcessing(empty_below_share=1e-3).clean(mask).sum() == 0
    assert PostProcessing(empty_below_share=5e-4).clean(mask).sum() == 9


def test_the_threshold_that_scores_best_is_chosen():
    truth = blob()
    # the model is under-confident: the object sits at 0.4, the background at 0.1
    foreground = np.where(truth == 1, 0.4, 0.1).astype(np.float32)
    choice = choose_post_processing([foreground], lambda masks: iou(masks, [truth]), threshold=0.5)
    assert choice.rules.threshold < 0.4
    assert choice.before == 0.0 and choice.after == 1.0


def test_specks_on_empty_images_are_removed_when_that_scores_better():
    truths = [blob(), np.zeros((100, 100), np.uint8)]
    noisy = np.zeros((100, 100), np.float32)
    noisy[50:53, 50:53] = 0.9  # a false speck on the empty image
    foregrounds = [blob().astype(np.float32) * 0.9, noisy]
    choice = choose_post_processing(foregrounds, lambda masks: empty_aware(masks, truths))
    assert choice.before == pytest.approx(0.5)
    assert choice.after == 1.0
    assert choice.rules.cleans
    assert choice.rules.threshold == 0.5  # no threshold improves on it: left as it was


def test_a_rule_that_does_not_help_is_left_out():
    truth = blob()
    foreground = truth.astype(np.float32) * 0.9
    choice = choose_post_processing([foreground], lambda masks: iou(masks, [truth]))
    assert choice.rules == PostProcessing()
    assert choice.before == choice.after == 1.0


def test_a_metric_to_minimise_is_minimised():
    truth = blob()
    foreground = np.where(truth == 1, 0.4, 0.1).astype(np.float32)
    choice = choose_post_processing(
        [foreground], lambda masks: 1 - iou(masks, [truth]), maximize=False
    )
    assert choice.after == 0.0 and choice.rules.threshold < 0.4


def test_rules_round_trip_through_json():
    rules = PostProcessing(threshold=0.4, min_region_share=2e-4, empty_below_share=5e-3)
    assert PostProcessing.from_json(rules.to_json()) == rules


def test_the_rules_stop_where_the_time_given_ends(monkeypatch):
    from segcli.evaluation import postprocess_search

    truths = [blob(), np.zeros((100, 100), np.uint8)]
    noisy = np.zeros((100, 100), np.float32)
    noisy[50:53, 50:53] = 0.9  # a speck the region and empty-image rules would remove
    foregrounds = [blob().astype(np.float32) * 0.9, noisy]
    clock = [0.0]  # every score takes one second
    monkeypatch.setattr(postprocess_search.time, "perf_counter", lambda: clock[0])

    def score(masks):
        clock[0] += 1.0
        return empty_aware(masks, truths)

    def choose(seconds):
        clock[0] = 0.0
        return choose_post_processing(foregrounds, score, seconds=seconds)

    assert choose(None).rules.cleans
    # the plain score, then the 8 other thresholds fit in 9.5 s; the 6 region sizes would not
    within = choose(9.5)
    assert clock[0] == 9.0
    assert not within.rules.cleans and within.after == within.before == pytest.approx(0.5)
    assert choose(0.0).rules == PostProcessing() and clock[0] == 1.0


def test_the_choice_images_are_counted_with_their_pixels_from_the_mask_headers(tmp_path):
    from PIL import Image

    from segcli.evaluation.postprocess_search import ChoiceImages, choice_images

    pairs = []
    for name, (width, height) in (("a", (200, 100)), ("b", (100, 100))):
        Image.fromarray(np.zeros((height, width), np.uint8)).save(tmp_path / f"{name}.png")
        pairs.append((tmp_path / f"{name}.png", tmp_path / f"{name}.png"))
    assert choice_images(pairs) == ChoiceImages(2, 30_000)
    assert choice_images([]) == ChoiceImages(0, 0)


def test_a_rule_that_lowers_a_guarded_metric_is_left_out():
    # a blob the model is unsure of (0.45) and specks (0.42) on two empty images: a threshold
    # of 0.4 finds the blob (pooled IoU up) but fills the empty images (per-image score down)
    unsure, sure = blob(), blob(top=50, left=50)
    truths = [unsure, np.zeros((100, 100), np.uint8), sure, np.zeros((100, 100), np.uint8)]
    speck = np.zeros((100, 100), np.float32)
    speck[5:8, 5:8] = 0.42
    foregrounds = [unsure * 0.45, speck, sure * 0.9, speck]

    def pooled_iou(masks):
        return iou(masks, truths)

    def guarded(masks):
        return iou(masks, truths), empty_aware(masks, truths)

    unguarded = choose_post_processing(foregrounds, pooled_iou)
    assert unguarded.rules.threshold <= 0.4 and unguarded.after > unguarded.before
    kept = choose_post_processing(foregrounds, guarded)
    assert kept.rules == PostProcessing() and kept.after == kept.before == 0.5
