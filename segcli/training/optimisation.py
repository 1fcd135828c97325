"""The optimiser and the learning-rate schedule of a run, built from their plugins.

`[train.optimizer]` and `[train.scheduler]` name a registered factory; their other keys are
its options (checked by `segcli.training.preflight` before a run folder exists).
"""

from __future__ import annotations

import torch
from torch import nn

from segcli.config import RunConfig
from segcli.factories import call_factory
from segcli.plugins import Plugins, get_plugins


def build_optimizer(
    config: RunConfig, model: nn.Module, plugins: Plugins | None = None
) -> torch.optim.Optimizer:
    """The configured optimiser over the model's trainable parameters, at `train.lr`."""
    chosen = config.train.optimizer
    parameters = [p for p in model.parameters() if p.requires_grad]
    registry = (plugins or get_plugins()).optimizers
    return call_factory(registry, chosen.name, parameters, config.train.lr, **chosen.options)


class ScheduleLayout:
    """Where the schedule plugin's curve lies on the run's optimizer steps.

    The curve covers one *segment*: from `start` to `last`, the step that gets the curve's end
    value. A run is one segment over `train.epochs` (then the factor of step k is the
    plugin's factor(k), as it always was); with `train.max_time`, `last` is re-planned after
    every step from the measured step time (`end_at`), so the curve ends at the end of the
    budget, decayed, not cut. Extending a finished run starts a new segment at its step.
    """

    def __init__(
        self, config: RunConfig, steps_per_epoch: int, plugins: Plugins | None = None
    ) -> None:
        chosen = config.train.scheduler
        registry = (plugins or get_plugins()).schedulers
        self._make = lambda total_steps: call_factory(
            registry, chosen.name, total_steps, steps_per_epoch, **chosen.options
        )
        self.steps_per_epoch = steps_per_epoch
        self.start = 0
        self.total_steps = max(1, config.train.epochs * steps_per_epoch)
        self._curve = self._make(self.total_steps)

    def factor(self, step: int) -> float:
        return self._curve(step - self.start)

    def begin_segment(self, start: int, total_steps: int) -> None:
        """The curve from `start` over `total_steps` steps (an extension, or a resume that
        changed `train.epochs`)."""
        self.start = start
        self._lay_out(total_steps)

    def end_at(self, last: int) -> None:
        """Make step `last` the one that gets the curve's end value."""
        self._lay_out(last - self.start)

    def _lay_out(self, total_steps: int) -> None:
        total_steps = max(1, total_steps)
        if total_steps != self.total_steps:
            self.total_steps = total_steps
            self._curve = self._make(total_steps)


class LaidOutLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR over a `ScheduleLayout`; the layout is the run's, not part of the saved state."""

    def __init__(self, optimizer: torch.optim.Optimizer, layout: ScheduleLayout) -> None:
        self.layout = layout
        # a plain function: LambdaLR saves callable objects' attributes, and none belong here
        super().__init__(optimizer, lambda step: layout.factor(step))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.pop("layout", None)
        return state

    def set_current(self, step: int) -> None:
        """The learning rate of `step` now (a new segment starts from the curve's start)."""
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * self.layout.factor(step)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_scheduler(
    config: RunConfig,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    plugins: Plugins | None = None,
) -> LaidOutLR:
    return LaidOutLR(optimizer, ScheduleLayout(config, steps_per_epoch, plugins))
