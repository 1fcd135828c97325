"""The optimiser and the learning-rate schedule of a run, built from their plugins.

`[train.optimizer]` and `[train.scheduler]` name a registered factory; their other keys are
its options (checked by `segcli.engine.preflight` before a run folder exists).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from segcli.config import RunConfig
from segcli.engine.build import call_factory
from segcli.plugins import Plugins, get_plugins


def build_optimizer(
    config: RunConfig, model: nn.Module, plugins: Plugins | None = None
) -> torch.optim.Optimizer:
    """The configured optimiser over the model's trainable parameters, at `train.lr`."""
    chosen = config.train.optimizer
    parameters = [p for p in model.parameters() if p.requires_grad]
    registry = (plugins or get_plugins()).optimizers
    return call_factory(registry, chosen.name, parameters, config.train.lr, **chosen.options)


def build_schedule(
    config: RunConfig, steps_per_epoch: int, plugins: Plugins | None = None
) -> Callable[[int], float]:
    """The factor multiplying `train.lr` at each optimizer step: a plain function of the step,
    so a resumed run (LambdaLR restores the step count) continues on exactly the same curve."""
    chosen = config.train.scheduler
    total_steps = max(1, config.train.epochs * steps_per_epoch)
    registry = (plugins or get_plugins()).schedulers
    return call_factory(registry, chosen.name, total_steps, steps_per_epoch, **chosen.options)


def build_scheduler(
    config: RunConfig,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    plugins: Plugins | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = build_schedule(config, steps_per_epoch, plugins)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
