"""Every registered model, loss, metric and transform runs the contract suite of
segcli.testing.

Parametrised over the registries, so a plugin is checked the moment it registers. Only
the widths of our own models are shrunk here; third-party ones run with the options and
sizes they declare (``test_options``, ``min_input_size``) or the checks' defaults.
"""

from __future__ import annotations

import pytest

from segcli.losses import build_loss
from segcli.plugins import get_plugins
from segcli.testing import (
    check_loss,
    check_metric,
    check_model,
    check_optimizer,
    check_scheduler,
    check_transform,
    pixels_from_matrix,
)

PLUGINS = get_plugins()

# small widths keep the suite fast on two CPU cores
MODEL_OPTIONS = {
    "unet": {"depth": 2, "base_width": 4},
    "unet-valid": {"base_width": 4},
    "fcn8s-vgg": {"head_width": 16},
}
SLOW_MODELS = {"deeplabv3-resnet50", "deeplabv3-resnet101", "fcn-resnet50", "unet-resnet"}
BINARY_CAPABLE_LOSSES = ["dice", "focal", "lovasz", "tversky"]


def _model_params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in names]


@pytest.mark.parametrize("name", _model_params(PLUGINS.models.names()))
def test_model_contract(name):
    check_model(PLUGINS.models.get(name), options=MODEL_OPTIONS.get(name), name=name)


@pytest.mark.parametrize(
    "name",
    [
        "unet",
        "unet-valid",
        pytest.param("unet-resnet", marks=pytest.mark.slow),
        pytest.param("erfnet", marks=pytest.mark.slow),
        pytest.param("fcn8s-vgg", marks=pytest.mark.slow),
    ],
)
def test_model_contract_grey_input(name):
    check_model(
        PLUGINS.models.get(name),
        in_channels=1,
        num_classes=1,
        options=MODEL_OPTIONS.get(name),
        name=name,
    )


@pytest.mark.parametrize(
    "options",
    [
        {"depth": 3, "base_width": 4, "bilinear": False},
        {"depth": 1, "base_width": 4, "batch_norm": False},
        {"depth": 3, "base_width": 4, "max_width": 8},
    ],
)
def test_unet_variants_keep_the_contract(options):
    check_model(PLUGINS.models.get("unet"), options=options, sizes=((33, 47), (17, 9)), name="unet")


@pytest.mark.parametrize("name", PLUGINS.losses.names())
def test_loss_contract(name):
    check_loss(PLUGINS.losses.get(name), name=name)


@pytest.mark.parametrize("name", BINARY_CAPABLE_LOSSES)
def test_loss_contract_single_logit(name):
    check_loss(PLUGINS.losses.get(name), binary=True, name=name)


@pytest.mark.parametrize(
    ("spec", "binary"), [("ce+dice", False), ("ce:1.0+lovasz:0.5", False), ("bce+dice", True)]
)
def test_weighted_sums_keep_the_loss_contract(spec, binary):
    def factory(num_classes, ignore_index):
        return build_loss(PLUGINS.losses, spec, num_classes, ignore_index)

    check_loss(factory, binary=binary, name=spec)


NAN = float("nan")
# truth rows x prediction columns; class 2 is absent from truth and prediction
MATRIX_ABSENT = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]
# class 2 is predicted but never true: IoU 0 counts, class accuracy is undefined
MATRIX_FALSE_ONLY = [[4, 0, 2], [0, 3, 0], [0, 0, 0]]

KNOWN = {
    "confusion": [
        (
            *pixels_from_matrix(MATRIX_ABSENT),
            {
                "pixel_accuracy": 8 / 11,
                "iou": [5 / 8, 3 / 6, NAN],
                "miou": (5 / 8 + 3 / 6) / 2,
                "dice": [10 / 13, 6 / 9, NAN],
                "mean_dice": (10 / 13 + 6 / 9) / 2,
                "class_accuracy": [5 / 6, 3 / 5, NAN],
                "mean_class_accuracy": (5 / 6 + 3 / 5) / 2,
                "matrix": MATRIX_ABSENT,
            },
        ),
        (
            *pixels_from_matrix(MATRIX_FALSE_ONLY),
            {
                "pixel_accuracy": 7 / 9,
                "iou": [4 / 6, 1.0, 0.0],
                "miou": (4 / 6 + 1.0) / 3,
                "dice": [8 / 10, 1.0, 0.0],
                "class_accuracy": [4 / 6, 1.0, NAN],
                "mean_class_accuracy": (4 / 6 + 1.0) / 2,
            },
        ),
    ],
    "binary": [
        (
            *pixels_from_matrix([[5, 1], [2, 3]]),
            {"precision": 3 / 4, "recall": 3 / 5, "f1": 6 / 9, "iou": 3 / 6, "accuracy": 8 / 11},
        ),
        (*pixels_from_matrix([[4, 0], [0, 0]]), {"f1": 1.0, "iou": 1.0, "precision": NAN}),
    ],
}


def _tgs_case():
    import torch

    truth = torch.zeros(5, 1, 20, dtype=torch.int64)
    pred = torch.zeros_like(truth)
    truth[0, 0, :4] = 1
    pred[0, 0, :3] = 1  # IoU 0.75: hits at 0.50..0.70, 5 of 10 thresholds
    # image 1: both empty -> 1
    pred[2, 0, :2] = 1  # empty truth, non-empty prediction -> 0
    truth[3, 0, :5] = 1  # non-empty truth, empty prediction -> 0
    truth[4, 0, :] = 1
    pred[4, 0, :11] = 1  # IoU exactly 0.55: a hit at 0.50 only -> 0.1
    return pred, truth, {"score": (0.5 + 1 + 0 + 0 + 0.1) / 5}


@pytest.mark.parametrize("name", PLUGINS.metrics.names())
def test_metric_contract(name):
    known = list(KNOWN.get(name, []))
    if name == "tgs":
        known.append(_tgs_case())
    num_classes = 2 if name in ("binary", "tgs") else 3
    check_metric(PLUGINS.metrics.get(name), num_classes=num_classes, known=known, name=name)


@pytest.mark.parametrize("name", PLUGINS.transforms.names())
def test_transform_contract(name):
    check_transform(PLUGINS.transforms.get(name), name=name)


@pytest.mark.parametrize("name", PLUGINS.optimizers.names())
def test_optimizer_contract(name):
    check_optimizer(PLUGINS.optimizers.get(name), name=name)


@pytest.mark.parametrize("name", PLUGINS.schedulers.names())
def test_scheduler_contract(name):
    check_scheduler(PLUGINS.schedulers.get(name), name=name)


def test_a_scheduler_with_state_breaks_the_contract():
    def stateful(total_steps, steps_per_epoch):
        calls = []

        def factor(step):
            calls.append(step)
            return 1.0 / len(calls)

        return factor

    with pytest.raises(AssertionError, match=r"\[a function of the step\]"):
        check_scheduler(stateful, name="stateful")


def test_an_optimizer_that_ignores_lr_breaks_the_contract():
    import torch

    def fixed(parameters, lr):
        return torch.optim.SGD(parameters, lr=0.1)

    with pytest.raises(AssertionError, match="optimizer 'fixed' breaks the contract"):
        check_optimizer(fixed, name="fixed")
