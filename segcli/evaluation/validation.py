"""Validation while training: the batch form of the one scoring path.

The model is scored on the validation loader's batches, at the training size, with its loss;
the predictions go through `Scoring` as `evaluate_split`'s images do, into the same metric
plugins, so a validation and an evaluation of the same predictions give the same scores
(`evaluate_split` predicts whole images as `segcli predict` makes them instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from segcli.building import PluginCalls, autocast_for, predictions
from segcli.config import RunConfig
from segcli.evaluation.scores import Scoring


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable | None,
    metrics: dict[str, Any],
    device: torch.device,
    config: RunConfig,
    *,
    across_processes: bool = False,
    calls: PluginCalls | None = None,
) -> dict[str, Any]:
    """The validation loss (`val/loss`, without a `loss_fn` none) and every metric plugin's
    results (`<metric>/<key>`) over a loader of (images, masks) batches. With
    `across_processes` (under torchrun) every process's scores are added up, so each returns
    those of the whole split."""
    calls = calls or PluginCalls.of(config)
    model.eval()
    scoring = Scoring(metrics, loss_device=None if loss_fn is None else device)
    for images, masks in loader:
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        loss = None
        with autocast_for(config.train.amp, device):
            logits = calls.logits(model, images)
            if loss_fn is not None:
                loss = calls.loss_of(loss_fn, logits, masks)
        scoring.add_batch(predictions(logits.float(), config.train.threshold), masks, loss)
    if across_processes:
        scoring.sum_across_processes()
    mean_loss = scoring.mean_loss()
    return ({} if mean_loss is None else {"val/loss": mean_loss}) | scoring.metric_scores()
