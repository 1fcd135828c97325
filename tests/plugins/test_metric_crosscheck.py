"""Confusion-matrix scores agree with an independent NumPy computation on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segcli_metrics.confusion import ConfusionMatrixMetric

from segcli.errors import DataError

IGNORE = 255


def _numpy_scores(preds, targets, num_classes):
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, target in zip(preds, targets, strict=True):
        keep = target != IGNORE
        np.add.at(matrix, (target[keep], pred[keep]), 1)
    scores = {}
    tp = np.diag(matrix).astype(np.float64)
    truth, predicted = matrix.sum(1), matrix.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        union = truth + predicted - tp
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (truth + predicted), np.nan)
        accuracy = np.where(truth > 0, tp / truth, np.nan)
    scores["pixel_accuracy"] = tp.sum() / matrix.sum()
    scores["iou"], scores["miou"] = iou, np.nanmean(iou)
    scores["dice"], scores["mean_dice"] = dice, np.nanmean(dice)
    scores["class_accuracy"], scores["mean_class_accuracy"] = accuracy, np.nanmean(accuracy)
    scores["matrix"] = matrix
    return scores


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_numpy_with_ignore_pixels(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 7))
    preds, targets = [], []
    for _ in range(3):  # several updates
        shape = (int(rng.integers(1, 4)), int(rng.integers(5, 30)), int(rng.integers(5, 30)))
        # the last class never occurs in the truth; predictions sometimes hit it
        target = rng.integers(0, num_classes - 1, shape)
        target[rng.random(shape) < 0.2] = IGNORE
        pred = rng.integers(0, num_classes, shape)
        preds.append(pred)
        targets.append(target)
    metric = ConfusionMatrixMetric(num_classes, IGNORE)
    for pred, target in zip(preds, targets, strict=True):
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    ours = metric.compute()
    expected = _numpy_scores(preds, targets, num_classes)
    np.testing.assert_array_equal(np.array(ours["matrix"]), expected["matrix"])
    for key in ("pixel_accuracy", "miou", "mean_dice", "mean_class_accuracy"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-6), key
    for key in ("iou", "dice", "class_accuracy"):
        np.testing.assert_allclose(np.array(ours[key]), expected[key], atol=1e-6, equal_nan=True)


def test_class_absent_everywhere_is_left_out_of_the_means():
    metric = ConfusionMatrixMetric(3)
    metric.update(torch.tensor([[[0, 1, 1]]]), torch.tensor([[[0, 1, 0]]]))
    scores = metric.compute()
    assert np.isnan(scores["iou"][2]) and np.isnan(scores["dice"][2])
    assert scores["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_out_of_range_class_ids_are_reported_not_miscounted():
    metric = ConfusionMatrixMetric(2)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 7]]]))
    with pytest.raises(DataError, match="outside 0..1"):
        metric.compute()


def test_state_stays_on_the_inputs_device_and_dtype():
    metric = ConfusionMatrixMetric(4)
    metric.update(torch.zeros(1, 3, 3, dtype=torch.uint8), torch.zeros(1, 3, 3, dtype=torch.int32))
    assert metric.counts.device == torch.device("cpu") and metric.counts.dtype == torch.int64
    assert metric.compute()["pixel_accuracy"] == 1.0
