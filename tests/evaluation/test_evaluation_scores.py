"""The one IoU rule and the one evaluation loop (`segcli.evaluation`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segcli.errors import DataError
from segcli.evaluation import confusion_matrix, evaluate_split, iou_scores


def test_absent_classes_are_left_out_and_an_image_without_labelled_pixels_has_no_score():
    truth = np.array([[0, 0, 1, 255]])
    prediction = np.array([[0, 1, 1, 3]])
    confusion = confusion_matrix(prediction, truth, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    per_class, mean = iou_scores(confusion)
    assert per_class[:2] == [0.5, 0.5] and math.isnan(per_class[2]) and math.isnan(per_class[3])
    assert mean == 0.5  # classes 2 and 3 are in neither truth nor prediction: not counted
    assert iou_scores(confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2)), 3))[1] == 1.0
    _, empty = iou_scores(confusion_matrix(np.ones((2, 2)), np.full((2, 2), 255), 3))
    assert math.isnan(empty)  # every pixel ignored: no score, not a perfect one


def test_class_ids_outside_the_model_are_an_error_not_dropped():
    with pytest.raises(DataError, match=r"m\.png: class ids up to 5 .*\(ids 0\.\.2\)"):
        confusion_matrix(np.array([[0, 5]]), np.array([[0, 1]]), 3, "m.png")


def test_the_rule_is_the_confusion_metric_plugins_rule():
    from segcli_metrics.confusion import ConfusionMatrixMetric

    rng = np.random.default_rng(0)
    for _ in range(20):
        classes = int(rng.integers(2, 6))
        used = int(rng.integers(1, classes + 1))  # the classes above `used` are absent
        truth = rng.integers(0, used, (9, 7))
        truth[rng.random(truth.shape) < 0.2] = 255
        prediction = rng.integers(0, used, (9, 7))
        metric = ConfusionMatrixMetric(classes)
        metric.update(torch.from_numpy(prediction)[None], torch.from_numpy(truth)[None])
        plugin = metric.compute()
        confusion = confusion_matrix(prediction, truth, classes)
        per_class, mean = iou_scores(confusion)
        assert confusion.tolist() == plugin["matrix"]
        assert per_class == pytest.approx(plugin["iou"], nan_ok=True)
        assert mean == pytest.approx(plugin["miou"], nan_ok=True)


@pytest.fixture
def counted_predictor(trained_run, monkeypatch):
    from segcli.inference.predictor import Predictor

    predictor = Predictor(trained_run / "best.safetensors", "cpu")
    calls = []  # the number of images of each model call (evaluation batches them)
    original = Predictor.probabilities

    def counting(self, batch):
        calls.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(Predictor, "probabilities", counting)
    return predictor, calls


def test_per_image_counts_add_up_to_the_splits_and_the_worst_are_the_lowest(
    counted_predictor, shapes_dataset
):
    predictor, calls = counted_predictor
    seen = []
    evaluation = evaluate_split(predictor, shapes_dataset, "val", worst=3, on_image=seen.append)
    assert sum(calls) == len(seen) == evaluation.images == 16  # each image predicted once
    assert evaluation.confusion.tolist() == evaluation.metrics["confusion/matrix"]
    assert sum(r.confusion for r in seen).tolist() == evaluation.confusion.tolist()
    assert [r.iou for r in seen] == [iou for _, iou in evaluation.per_image]
    assert all(r.iou == iou_scores(r.confusion)[1] for r in seen)
    lowest = sorted(r.iou for r in seen)[:3]
    assert [r.iou for r in evaluation.worst] == lowest
    assert evaluation.worst[0].prediction.shape == evaluation.worst[0].truth.shape


def test_visualize_worst_first_predicts_each_image_once(counted_predictor, shapes_dataset):
    from segcli.visualize import prediction_rows

    predictor, calls = counted_predictor
    prediction_rows(shapes_dataset, predictor, "val", 4, worst_first=True)
    assert sum(calls) == 16  # was 16 + 4: the chosen ones were predicted again
    calls.clear()
    prediction_rows(shapes_dataset, predictor, "val", 4)
    assert sum(calls) == 4


def test_whole_images_go_through_the_model_a_batch_at_a_time_with_the_same_results(
    counted_predictor, shapes_dataset
):
    predictor, calls = counted_predictor
    masks = {1: [], 4: []}
    results = {}
    for batch_size in (1, 4):
        calls.clear()
        results[batch_size] = evaluate_split(
            predictor,
            shapes_dataset,
            "val",
            batch_size=batch_size,
            on_image=lambda record, size=batch_size: masks[size].append(record.prediction),
        )
        assert calls == [batch_size] * (16 // batch_size)  # was one call per image
    assert all(np.array_equal(a, b) for a, b in zip(masks[1], masks[4], strict=True))
    assert results[4].per_image == results[1].per_image
    assert results[4].confusion.tolist() == results[1].confusion.tolist()
    calls.clear()
    evaluate_split(predictor, shapes_dataset, "val", batch_size=4, tile=16, overlap=0.25)
    assert len(calls) > 16 and max(calls) <= 4  # tiles: windows of one image at a time
