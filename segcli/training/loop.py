"""The step loop, `train_one_epoch` (one pass of optimizer steps); validation is
`segcli.evaluation.validation.validate`, the batch form of the one scoring path.

The step loop never synchronises with the device except every `train.log_every` steps,
when the running loss is read once for the reporter and the weights are checked for NaN and
infinities (`check_finite`, which ends a diverged run before anything non-finite is saved).
The model and the loss are called through `segcli.building.PluginCalls`, which blames what
they raise or return against their contract on the plugin that provides them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from segcli.building import PluginCalls, autocast_for
from segcli.config import RunConfig
from segcli.data.dataset import EpochSampler, SegmentationDataset, collate
from segcli.errors import DivergedError


class Reporter(Protocol):
    """What training tells its display (the CLI's progress and pictures, or nothing)."""

    def start(
        self,
        run_dir: Path,
        epochs: int,
        steps_per_epoch: int,
        *,
        max_time: float | None = None,
        spent: float = 0.0,
    ) -> None:
        """`max_time`: the time budget in seconds, if any; `spent`: seconds of it used so far
        (setup, and an earlier session of a resumed run)."""

    def step(self, epoch: int, step: int, loss: float | None, images_per_second: float) -> None:
        """Called after every optimizer step; `loss` (the epoch's running mean) only every
        `train.log_every` steps and at the epoch's end, as reading it waits for the device."""

    def epoch_end(self, record: dict[str, Any], best: float | None) -> None: ...
    def run_end(self, run_dir: Path) -> None: ...


class SilentReporter:
    def start(
        self,
        run_dir: Path,
        epochs: int,
        steps_per_epoch: int,
        *,
        max_time: float | None = None,
        spent: float = 0.0,
    ) -> None:
        pass

    def step(self, epoch: int, step: int, loss: float | None, images_per_second: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any], best: float | None) -> None:
        pass

    def run_end(self, run_dir: Path) -> None:
        pass


class Pacer(Protocol):
    """What a time budget tells the step loop (`segcli.training.budget`, via `fit`)."""

    def out_of_time(self) -> bool: ...
    def after_step(self, steps_left_in_epoch: int) -> None: ...


@dataclass
class TrainingState:
    """Where a run is; saved in `last` so that a resumed run continues exactly."""

    epoch: int = 0  # epochs completed = the next epoch to run
    step: int = 0  # optimizer steps taken
    best: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    # seconds per phase (setup, training, validation, checkpoints) up to the last checkpoint
    seconds: dict[str, float] = field(default_factory=dict)
    # the schedule's current segment starts at this step and epoch (an extension starts one)
    segment_step: int = 0
    segment_epoch: int = 0
    stopped: str | None = None  # why the run ended: budget, epochs, early-stop or max-steps


def check_finite(model: nn.Module, loss: float | None, epoch: int, step: int, lr: float) -> None:
    """Raise DivergedError when the training loss or the weights (parameters and floating
    buffers) hold NaN or infinity: training on would only save NaN weights as `best`."""
    if loss is not None and math.isfinite(loss):
        loss = None
    if loss is None:
        tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        if not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            return
    what = f"the training loss is {loss}" if loss is not None else "the weights hold NaN or inf"
    raise DivergedError(
        f"training diverged in epoch {epoch + 1} (by step {step}): {what}; nothing non-finite "
        "was saved",
        hint=f"lower train.lr (now {lr:g}) or set train.clip_grad=1.0, and check input.mean, "
        "input.std and the data",
    )


def make_loader(
    dataset: SegmentationDataset, sampler: EpochSampler, config: RunConfig, device: torch.device
) -> DataLoader:
    workers = max(0, config.train.workers)
    return DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        collate_fn=collate,
        # worker seeds come from this generator, not the global RNG, which stays the model's
        generator=torch.Generator().manual_seed(config.train.seed),
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: RunConfig,
    device: torch.device,
    state: TrainingState,
    *,
    scaler: torch.amp.GradScaler | None = None,
    ema: AveragedModel | None = None,
    reporter: Reporter | None = None,
    max_steps: int | None = None,
    pacer: Pacer | None = None,
    calls: PluginCalls | None = None,
) -> torch.Tensor:
    """One pass over the training data; returns the mean loss as a tensor (no host sync).

    A `pacer` (the time budget) may end the pass before a step, and is told of each step
    before the schedule moves on, so it can say where the schedule has to end. Every
    `train.log_every` steps the weights are checked (`check_finite`; under torchrun every
    process checks the same weights at the same step, so all stop together)."""
    calls = calls or PluginCalls.of(config)
    model.train()
    accumulate = max(1, config.train.accumulate)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=device)
    batches = 0
    window_images, window_start = 0, time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    batches_in_epoch = len(loader)
    for index, (images, masks) in enumerate(loader):
        if pacer is not None and index % accumulate == 0 and pacer.out_of_time():
            break
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        masks = masks.to(device, non_blocking=True)
        with autocast_for(config.train.amp, device):
            loss = calls.loss_of(loss_fn, calls.logits(model, images), masks)
        (scaler.scale(loss / accumulate) if scaler else loss / accumulate).backward()
        loss_sum += loss.detach()
        batches += 1
        window_images += images.shape[0]
        last_batch = index + 1 == batches_in_epoch
        if (index + 1) % accumulate and not last_batch:
            continue
        if config.train.clip_grad > 0:
            if scaler:
                scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.train.clip_grad)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        state.step += 1
        if pacer is not None:
            pacer.after_step(-(-(batches_in_epoch - index - 1) // accumulate))
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)
        due = state.step % max(1, config.train.log_every) == 0
        if due:
            check_finite(model, None, state.epoch, state.step, config.train.lr)
        if reporter is not None:
            reads_loss = due or last_batch
            elapsed = time.perf_counter() - window_start
            reporter.step(
                state.epoch,
                index + 1,
                float(loss_sum / batches) if reads_loss else None,
                window_images / max(elapsed, 1e-9),
            )
            window_images, window_start = 0, time.perf_counter()
        if max_steps is not None and state.step >= max_steps:
            break
    return loss_sum / max(1, batches)
