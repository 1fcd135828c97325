"""Deliberately broken fake plugins fail the contract suite, naming the broken property."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segcli.testing import check_loss, check_metric, check_model, pixels_from_matrix


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
