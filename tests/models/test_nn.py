"""segcli.nn: batch norm that trains on a single value per channel."""

import pytest
import torch
from torch import nn

from segcli.nn import SingleValueSafeBatchNorm2d, make_single_value_safe


class BatchNormWithExtra(nn.BatchNorm2d):
    """Stands in for timm's BatchNormAct2d: a subclass adding behaviour."""


def test_make_single_value_safe_converts_plain_batch_norms_in_place():
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    model = nn.ModuleDict(
        {"path": nn.Sequential(nn.Conv2d(3, 3, 3), pooled), "extra": BatchNormWithExtra(4)}
    )
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train()["path"](torch.randn(1, 3, 8, 8))
    before = model.state_dict()

    assert make_single_value_safe(model) is model

    assert type(pooled[2]) is SingleValueSafeBatchNorm2d
    assert type(model["extra"]) is BatchNormWithExtra
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)
    assert torch.isfinite(model.train()["path"](torch.randn(1, 3, 8, 8))).all()
