"""Timing a candidate plan on the machine at hand: a few real training steps, data pipeline
included, and a validation batch, on the device that will train.

The planner asks for a measurement of each configuration it considers
(`segcli.planning.Timer`); this module answers with the real thing: the prepared
dataset's own images (a small, evenly spaced sample), the planned transforms, loader, model,
loss, optimiser, precision and memory format, through `train_one_epoch` and `validate`, the
functions the training runs. So a busy machine, a slow data pipeline or a CPU whose bf16 is
slow shows in the figures the plan is made from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.config import RunConfig
from segcli.data.format import DatasetInfo

# steps whose time is not counted: the loader's start, allocations, kernel selection
WARMUP_STEPS = 2
TIMED_STEPS = 3


@dataclass(frozen=True)
class Measurement:
    """What one candidate configuration achieved on this machine."""

    # training images per second, data pipeline and optimiser step included
    train_images_per_second: float
    # validation images per second (forward pass, metrics), at the validation input size
    val_images_per_second: float
    # wall-clock seconds the measurement itself took (it is part of the budget)
    seconds: float


class _StepClock:
    """A reporter that notes when each optimiser step ended."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def step(self, epoch: int, step: int, loss: float | None, images_per_second: float) -> None:
        self.ends.append(time.perf_counter())

    def epoch_end(self, record: dict[str, Any], best: float | None) -> None:
        pass

    def run_end(self, run_dir: Path) -> None:
        pass


def measure(config: RunConfig, root: Path, info: DatasetInfo) -> Measurement:
    """Time `config`'s training steps and validation on a sample of the dataset at `root`."""
    import torch

    from segcli.building import build_loss, build_model
    from segcli.data.dataset import EpochSampler, SegmentationDataset, build_transforms
    from segcli.devices import resolve_device
    from segcli.memory import available_memory
    from segcli.training.loop import TrainingState, make_loader, train_one_epoch
    from segcli.training.optimisation import build_optimizer

    started = time.perf_counter()
    device = resolve_device(config.train.device)
    batch = config.train.batch_size
    train_set = SegmentationDataset(
        root,
        config.dataset.train_split,
        build_transforms(config.input, config.augment, info.image_channels),
        config.train.seed,
        info,
        config.input.load_size(augmented=True),
    )
    cached = config.dataset.cache == "memory" or (
        config.dataset.cache == "auto" and train_set.decoded_bytes() <= available_memory() // 4
    )
    # every step a full batch, repeating images when the split has fewer: a split smaller
    # than the steps would end the epoch early, on a short batch counted as a full one
    train_set.pairs = _spread(train_set.pairs, batch * (WARMUP_STEPS + TIMED_STEPS), repeat=True)
    if cached:  # as the run will (dataset.cache): then its steps read memory, not files
        train_set.decode_all()
    model = build_model(config, info).to(device)
    if config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config, info)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(device)
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    sampler = EpochSampler(len(train_set), shuffle=True, seed=config.train.seed)
    loader = make_loader(train_set, sampler, config, device)
    clock = _StepClock()
    train_one_epoch(
        model,
        loader,
        loss_fn,
        optimizer,
        scheduler,
        config,
        device,
        TrainingState(),
        reporter=clock,
        max_steps=WARMUP_STEPS + TIMED_STEPS,
    )
    _synchronise(device)
    ends = clock.ends
    timed = max(1, len(ends) - WARMUP_STEPS)
    seconds = ends[-1] - ends[min(WARMUP_STEPS, len(ends)) - 1] if len(ends) > 1 else 0.0
    train_speed = timed * batch / max(seconds, 1e-9)
    val_speed = _validation_speed(config, root, info, model, loss_fn, device)
    del loader  # its worker processes end with it
    return Measurement(train_speed, val_speed, time.perf_counter() - started)


def _validation_speed(
    config: RunConfig, root: Path, info: DatasetInfo, model: Any, loss_fn: Any, device: Any
) -> float:
    """Validation images per second: one batch to warm up, one timed."""
    from segcli.building import build_metrics
    from segcli.data.dataset import EpochSampler, SegmentationDataset, build_transforms
    from segcli.evaluation.validation import validate
    from segcli.training.loop import make_loader

    if config.dataset.val_split not in info.labelled_splits:
        return float("inf")
    val_set = SegmentationDataset(
        root,
        config.dataset.val_split,
        build_transforms(config.input, None, info.image_channels),
        config.train.seed,
        info,
        config.input.load_size(augmented=False),
    )
    val_set.pairs = _spread(val_set.pairs, 2 * config.train.batch_size)
    val_set.decode_all()
    loader = make_loader(val_set, EpochSampler(len(val_set), shuffle=False), config, device)
    metrics = build_metrics(config, info)
    seconds = 0.0
    for _ in range(2):  # the second pass is timed: workers started, kernels chosen
        began = time.perf_counter()
        validate(model, loader, loss_fn, metrics, device, config)
        _synchronise(device)
        seconds = time.perf_counter() - began
    return len(val_set) / max(seconds, 1e-9)


def _spread(items: list[Any], count: int, repeat: bool = False) -> list[Any]:
    """`count` evenly spaced items; when there are fewer, all of them, each repeated in
    turn up to `count` with `repeat`."""
    if len(items) <= count and not repeat:
        return list(items)
    return [items[index * len(items) // count] for index in range(count)]


def _synchronise(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
