"""Deliberately broken fake plugins fail the contract suite, naming the broken property."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from segcli.errors import PluginError
from segcli.nn import SingleValueSafeBatchNorm2d
from segcli.testing import (
    check_loss,
    check_metric,
    check_model,
    check_transform,
    pixels_from_matrix,
)


def _expect(prop: str):
    return pytest.raises(AssertionError, match=re.escape(f"[{prop}]"))


class _TinyNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Conv2d(4, num_classes, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


class _UnusedParameter(_TinyNet):
    def __init__(self, num_classes, in_channels):
        super().__init__(num_classes, in_channels)
        self.forgotten = nn.Conv2d(4, 4, 1)


class _HalfSize(_TinyNet):
    def forward(self, x):
        return super().forward(F.max_pool2d(x, 2))


class _DropoutInEval(_TinyNet):
    def forward(self, x):
        return F.dropout(super().forward(x), 0.5, training=True)


class _PooledBatchNorm(_TinyNet):
    def __init__(self, num_classes, in_channels):
        super().__init__(num_classes, in_channels)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        features = torch.relu(self.conv(x))
        pooled = self.norm(F.adaptive_avg_pool2d(features, 1))
        return self.head(features + pooled)


class _StateOutsideStateDict(_TinyNet):
    def __init__(self, num_classes, in_channels):
        super().__init__(num_classes, in_channels)
        self.offset = torch.randn(1)  # a plain attribute: not saved, not restored

    def forward(self, x):
        return super().forward(x) + self.offset


@pytest.mark.parametrize(
    ("model", "prop"),
    [
        (_UnusedParameter, "gradients reach every parameter"),
        (_HalfSize, "output shape"),
        (_DropoutInEval, "eval-mode determinism"),
        (_PooledBatchNorm, "batch of 1 in train mode"),
        (_StateOutsideStateDict, "state-dict round trip"),
    ],
)
def test_broken_model_fails_on_its_property(model, prop):
    with _expect(prop):
        check_model(model, name="fake")


def test_sound_fake_model_passes():
    check_model(_TinyNet, name="fake")


def test_public_single_value_batch_norm_passes_the_batch_of_one_check():
    class Safe(_PooledBatchNorm):
        def __init__(self, num_classes, in_channels):
            super().__init__(num_classes, in_channels)
            self.norm = SingleValueSafeBatchNorm2d(4)

    check_model(Safe, name="fake")
    assert set(Safe(2, 3).norm.state_dict()) == set(nn.BatchNorm2d(4).state_dict())


class _NeedsLargeInputs(_TinyNet):
    min_input_size = (40, 50)

    def forward(self, x):
        if x.shape[-2] < 40 or x.shape[-1] < 50:
            raise ValueError(f"needs 40x50 pixels, got {tuple(x.shape[-2:])}")
        return super().forward(x)


def test_declared_minimum_input_size_is_honoured():
    check_model(_NeedsLargeInputs, name="fake")


def test_declared_test_options_are_used():
    def factory(num_classes, in_channels, *, width):
        assert width == 2, "the declared test options were not used"
        return _TinyNet(num_classes, in_channels)

    factory.test_options = {"width": 2}
    check_model(factory, name="fake")


@pytest.mark.parametrize("check", [check_model, check_loss, check_metric, check_transform])
def test_a_crashing_factory_is_a_plugin_error_naming_its_plugin(check):
    def factory(*args, **options):
        raise KeyError("backbone")

    with pytest.raises(
        PluginError, match=r"from plugin test_broken_plugins .*KeyError: 'backbone'"
    ):
        check(factory, name="fake")


def _ce(logits, target):
    """Cross-entropy that keeps the contract (NaN-free when every pixel is ignored)."""
    total = F.cross_entropy(logits, target, ignore_index=255, reduction="sum")
    return total / (target != 255).sum().clamp(min=1)


@pytest.mark.parametrize(
    ("loss", "prop"),
    [
        (lambda logits, target: (logits * 0).sum() + 1.0, "finite gradients"),
        (lambda logits, target: _ce(logits, target) + 0.5, "near-zero for a perfect prediction"),
        (
            lambda logits, target: _ce(logits, target.clamp(max=logits.shape[1] - 1)),
            "ignore index honoured",
        ),
        (lambda logits, target: _ce(logits, target[:, : logits.shape[2]]), "shape validation"),
        (lambda logits, target: _ce(logits, target).expand(2), "scalar output"),
    ],
)
def test_broken_loss_fails_on_its_property(loss, prop):
    with _expect(prop):
        check_loss(lambda num_classes, ignore_index: loss, name="fake")


class _Counts:
    """A correct pixel-accuracy metric that the broken variants below alter one way each."""

    def __init__(self, num_classes, ignore_index=255):
        self.ignore_index = ignore_index
        self.reset()

    def reset(self):
        self.correct = self.total = None

    def _valid(self, target):
        return target != self.ignore_index

    def update(self, pred, target):
        valid = self._valid(target)
        correct, total = ((pred == target) & valid).sum(), valid.sum()
        if self.correct is None:
            self.correct, self.total = correct, total
        else:
            self.correct, self.total = self.correct + correct, self.total + total

    def compute(self):
        return {"accuracy": float(self.correct) / float(self.total)}


class _SyncsInUpdate(_Counts):
    def update(self, pred, target):
        super().update(pred, target)
        self.total = torch.tensor(self.total.item())


class _ForgetsToReset(_Counts):
    def reset(self):
        if not hasattr(self, "correct"):
            super().reset()


class _CountsIgnoredPixels(_Counts):
    def _valid(self, target):
        return (target != self.ignore_index) | (target == self.ignore_index)


class _KeepsLastBatchOnly(_Counts):
    def update(self, pred, target):
        self.reset()
        super().update(pred, target)


@pytest.mark.parametrize(
    ("metric", "prop"),
    [
        (_SyncsInUpdate, "no host sync in update"),
        (_ForgetsToReset, "reset"),
        (_CountsIgnoredPixels, "ignore index honoured"),
        (_KeepsLastBatchOnly, "accumulation"),
    ],
)
def test_broken_metric_fails_on_its_property(metric, prop):
    with _expect(prop):
        check_metric(metric, name="fake")


class _Float32Dice(_Counts):
    """Dice of class 1 computed in float32, as a GPU-friendly metric does."""

    def compute(self):
        return {"dice": float(2 * self.correct.float() / (2 * self.correct + self.total).float())}


def test_known_values_allow_float32_rounding():
    case = (*pixels_from_matrix([[3, 1], [2, 4]]), {"dice": 2 * 7 / (2 * 7 + 10)})
    check_metric(_Float32Dice, num_classes=2, known=[case], name="fake")


def test_wrong_known_value_is_named():
    class OffByOne(_Counts):
        def compute(self):
            return {"accuracy": float(self.correct) / float(self.total) - 0.01}

    case = (*pixels_from_matrix([[3, 1], [0, 4]]), {"accuracy": 7 / 8})
    check_metric(_Counts, num_classes=2, known=[case], name="fake")
    with _expect("known values"):
        check_metric(OffByOne, num_classes=2, known=[case], name="fake")


def test_message_names_the_plugin():
    with pytest.raises(AssertionError, match="model 'my-net'"):
        check_model(_HalfSize, name="my-net")


def _image_only_flip():
    def flip(image, mask):
        return tv_tensors.Image(image.flip(-1)), mask

    return flip


def _fills_with_zero():
    return v2.RandomAffine(degrees=30, fill=0)


def _bilinear_mask():
    def rotate(image, mask):
        turned = v2.functional.rotate(
            mask.as_subclass(torch.Tensor)[None].float(), 10, v2.InterpolationMode.BILINEAR
        )
        return v2.functional.rotate(image, 10), tv_tensors.Mask(turned[0].round().byte())

    return rotate


def _python_random():
    import random

    def flip(image, mask):
        return v2.RandomHorizontalFlip(float(random.random() < 0.5))(image, mask)

    return flip


def _plain_tensors():
    return lambda image, mask: (image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor))


@pytest.mark.parametrize(
    ("factory", "prop"),
    [
        (_image_only_flip, "image and mask move together"),
        (_fills_with_zero, "mask values preserved"),
        (_bilinear_mask, "mask values preserved"),
        (_python_random, "seeded determinism"),
        (_plain_tensors, "types and shapes"),
    ],
)
def test_broken_transform_fails_on_its_property(factory, prop):
    with _expect(prop):
        check_transform(factory, name="fake")


def test_sound_fake_transform_passes():
    check_transform(lambda: v2.RandomAffine(degrees=30, fill={tv_tensors.Mask: 255}), name="fake")
