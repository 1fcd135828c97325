"""Building blocks for model plugins that the engine's training setups need.

``SingleValueSafeBatchNorm2d`` replaces ``torch.nn.BatchNorm2d`` where a layer can see a
single value per channel in training: a pooled (1x1) branch with a batch of one image, as
the last, smaller batch of an epoch or a ``train.batch_size = 1`` run gives. Batch
statistics of one value are undefined (torch raises); such a batch is normalised with the
running statistics instead, which are then left unchanged. Its state-dict keys are
BatchNorm2d's, so existing weights load unchanged. ``make_single_value_safe`` converts
every such layer of a model built by another library (segmentation_models_pytorch, timm)
in place.
"""

from __future__ import annotations

import torch
from torch.nn import BatchNorm2d, Module
from torch.nn import functional as F

__all__ = ["SingleValueSafeBatchNorm2d", "make_single_value_safe", "single_value_safe"]


class SingleValueSafeBatchNorm2d(BatchNorm2d):
    """BatchNorm2d that normalises a one-value-per-channel training batch with the running
    statistics rather than failing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single_value = x.shape[0] * x.shape[2] * x.shape[3] == 1
        if self.training and single_value and self.running_mean is not None:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def single_value_safe(norm: BatchNorm2d) -> SingleValueSafeBatchNorm2d:
    """A SingleValueSafeBatchNorm2d with `norm`'s settings, parameters and statistics."""
    safe = SingleValueSafeBatchNorm2d(
        norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats
    )
    safe.load_state_dict(norm.state_dict())
    return safe


def make_single_value_safe(model: Module) -> Module:
    """`model`, each of whose plain ``BatchNorm2d`` layers is replaced in place by its
    ``single_value_safe`` copy. Subclasses (timm's ``BatchNormAct2d`` adds an activation,
    ``SyncBatchNorm`` is another type) are left as they are: replacing them would drop
    what they add."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if type(child) is BatchNorm2d:
                setattr(parent, child_name, single_value_safe(child))
    return model
