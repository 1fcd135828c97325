"""Setting up a run: the dataset on disk, the seed, and the parts an epoch works with (model,
loss, metrics, loaders, optimiser, schedule, EMA, DDP), all built from the configuration."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from segcli.building import build_loss, build_metrics, build_model
from segcli.config import RunConfig
from segcli.data.dataset import (
    EpochSampler,
    SegmentationDataset,
    build_transforms,
    cache_decoded,
)
from segcli.data.folds import fold_pairs
from segcli.data.format import DatasetInfo
from segcli.devices import resolve_device
from segcli.errors import DataError
from segcli.plugins import Plugins, get_plugins
from segcli.training import distributed
from segcli.training.loop import make_loader
from segcli.training.optimisation import build_optimizer, build_scheduler
from segcli.training.resume import load_weights


@dataclass
class RunParts:
    """Everything an epoch works with."""

    model: nn.Module  # the raw model: its weights are what `last` saves for resuming
    trained: nn.Module  # what the step loop calls (DDP and/or compiled)
    evaluated: nn.Module  # what validation and the checkpoints use (the EMA when on)
    ema: AveragedModel | None
    loss_fn: Any
    metrics: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    train_loader: DataLoader
    train_sampler: EpochSampler
    val_loader: DataLoader | None
    device: torch.device


def build_parts(
    config: RunConfig,
    root: Path,
    info: DatasetInfo,
    context: distributed.Distributed,
    plugins: Plugins,
) -> RunParts:
    device = resolve_device(config.train.device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    model = build_model(config, info, plugins)
    if config.model.weights:
        load_weights(model, Path(config.model.weights))
    model.to(device)
    if config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config, info, plugins)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    train_loader, train_sampler, val_loader = _build_loaders(config, root, info, context, device)
    steps_per_epoch = math.ceil(len(train_loader) / max(1, config.train.accumulate))
    optimizer = build_optimizer(config, model, plugins)
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.train.ema), use_buffers=True)
        if config.train.ema > 0
        else None
    )
    trained = model
    if context.enabled:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.train.compile:
        trained = torch.compile(trained)
    return RunParts(
        model=model,
        trained=trained,
        evaluated=ema.module if ema is not None else model,
        ema=ema,
        loss_fn=loss_fn,
        metrics=build_metrics(config, info, plugins),
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, steps_per_epoch, plugins),
        scaler=torch.amp.GradScaler("cuda") if config.train.amp == "fp16" else None,
        train_loader=train_loader,
        train_sampler=train_sampler,
        val_loader=val_loader,
        device=device,
    )


def _build_loaders(
    config: RunConfig,
    root: Path,
    info: DatasetInfo,
    context: distributed.Distributed,
    device: torch.device,
) -> tuple[DataLoader, EpochSampler, DataLoader | None]:
    """The training loader and its sampler, and the validation loader (None without one).
    A cross-validation fold reads its own images of the train and validation splits."""
    fold_train, fold_val = (fold_pairs(config, root, info, part) for part in ("train", "val"))
    train_set = SegmentationDataset(
        root,
        config.dataset.train_split if fold_train is None else f"fold {config.dataset.fold}",
        build_transforms(config.input, config.augment, info.image_channels),
        config.train.seed,
        info,
        load_size=config.input.load_size(augmented=True),
        pairs=fold_train,
    )
    train_sampler = EpochSampler(
        len(train_set),
        shuffle=True,
        seed=config.train.seed,
        rank=context.rank,
        world_size=context.world_size,
    )
    val_set = None
    if config.dataset.val_split in info.labelled_splits or fold_val is not None:
        val_set = SegmentationDataset(
            root,
            config.dataset.val_split if fold_val is None else f"fold {config.dataset.fold}",
            build_transforms(config.input, None, info.image_channels),
            config.train.seed,
            info,
            load_size=config.input.load_size(augmented=False),
            pairs=fold_val,
        )
    # before the loaders: their workers then share the decoded arrays
    cache_decoded([d for d in (train_set, val_set) if d is not None], config.dataset.cache)
    train_loader = make_loader(train_set, train_sampler, config, device)
    if val_set is None:
        return train_loader, train_sampler, None
    val_sampler = EpochSampler(
        len(val_set), shuffle=False, rank=context.rank, world_size=context.world_size
    )
    return train_loader, train_sampler, make_loader(val_set, val_sampler, config, device)


def prepare_hint(name: str, root: Path) -> str:
    """The `segcli prepare` command that makes a dataset. A dataset.path outside the current
    folder (`../../etc`) is not echoed as a place to write into: data/NAME is offered."""
    if root.resolve().is_relative_to(Path.cwd().resolve()):
        return f"run `segcli prepare {name} PATH/TO/RAW --out {shlex.quote(str(root))}` first"
    out = shlex.quote(str(Path("data") / name))
    return (
        f"run `segcli prepare {name} PATH/TO/RAW --out {out}` first and train with "
        f"--set dataset.path={out}"
    )


def ensure_dataset(config: RunConfig) -> Path:
    """The prepared dataset folder; a synthetic dataset is prepared on the spot if missing."""
    root = config.dataset_path()
    if (root / "dataset.json").is_file():
        return root
    preparer = get_plugins().datasets.get(config.dataset.name)
    if getattr(preparer, "needs_raw", True) or root.exists():
        raise DataError(
            f"dataset {config.dataset.name!r} is not prepared at {root}",
            hint=prepare_hint(config.dataset.name, root),
        )
    from segcli.data.prepare import build_dataset, provenance

    build_dataset(preparer(None), root, preparer=provenance(config.dataset.name, None, {}))
    return root


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
