"""Training: `fit` runs a whole configuration; `train_one_epoch` and `evaluate` are the loops.

The step loop never synchronises with the device except every `train.log_every` steps,
when the running loss is read once for display.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from segcli.config import RunConfig, build_config
from segcli.data.dataset import EpochSampler, SegmentationDataset, build_transforms, collate
from segcli.data.format import DatasetInfo, read_dataset_info
from segcli.data.io import remove_stale_temporaries
from segcli.engine import distributed
from segcli.engine.build import (
    autocast_for,
    build_loss,
    build_metrics,
    build_model,
    forward,
    model_record,
    predictions,
    resolve_device,
)
from segcli.engine.checkpoint import SUFFIX, load_checkpoint, load_model_state, save_checkpoint
from segcli.engine.metrics_log import read_metrics
from segcli.engine.optimisation import build_optimizer, build_scheduler
from segcli.engine.preflight import check_run
from segcli.engine.runs import (
    create_run_dir,
    discard_run_without_checkpoint,
    environment,
    interrupted_message,
    record_run,
)
from segcli.errors import CheckpointError, ConfigError, DataError, Interrupted, ResourceError
from segcli.plugins import get_plugins


class Reporter(Protocol):
    """What the training loop tells its display (the CLI's rich progress, or nothing)."""

    def start(self, run_dir: Path, epochs: int, steps_per_epoch: int) -> None: ...
    def step(self, epoch: int, step: int, loss: float, images_per_second: float) -> None: ...
    def epoch_end(self, record: dict[str, Any], best: float | None) -> None: ...


class _Silent:
    def start(self, run_dir: Path, epochs: int, steps_per_epoch: int) -> None:
        pass

    def step(self, epoch: int, step: int, loss: float, images_per_second: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any], best: float | None) -> None:
        pass


@dataclass
class TrainingState:
    """Where a run is; saved in `last` so that a resumed run continues exactly."""

    epoch: int = 0  # epochs completed = the next epoch to run
    step: int = 0  # optimizer steps taken
    best: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0


def ensure_dataset(config: RunConfig) -> Path:
    """The prepared dataset folder; a synthetic dataset is prepared on the spot if missing."""
    root = config.dataset_path()
    if (root / "dataset.json").is_file():
        return root
    preparer = get_plugins().datasets.get(config.dataset.name)
    if getattr(preparer, "needs_raw", True) or root.exists():
        raise DataError(
            f"dataset {config.dataset.name!r} is not prepared at {root}",
            hint=f"run `segcli prepare {config.dataset.name} PATH/TO/RAW --out {root}` first",
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
) -> torch.Tensor:
    """One pass over the training data; returns the mean loss as a tensor (no host sync)."""
    model.train()
    accumulate = max(1, config.train.accumulate)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=device)
    batches = 0
    window_images, window_start = 0, time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for index, (images, masks) in enumerate(loader):
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        masks = masks.to(device, non_blocking=True)
        with autocast_for(config.train.amp, device):
            loss = loss_fn(forward(model, images), masks)
        (scaler.scale(loss / accumulate) if scaler else loss / accumulate).backward()
        loss_sum += loss.detach()
        batches += 1
        window_images += images.shape[0]
        last_batch = index + 1 == len(loader)
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
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)
        state.step += 1
        if reporter is not None and (
            state.step % max(1, config.train.log_every) == 0 or last_batch
        ):
            elapsed = time.perf_counter() - window_start
            reporter.step(
                state.epoch,
                index + 1,
                float(loss_sum / batches),
                window_images / max(elapsed, 1e-9),
            )
            window_images, window_start = 0, time.perf_counter()
        if max_steps is not None and state.step >= max_steps:
            break
    return loss_sum / max(1, batches)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: Callable | None,
    metrics: dict[str, Any],
    device: torch.device,
    config: RunConfig,
    context: distributed.Distributed | None = None,
) -> dict[str, Any]:
    """Validation loss and every metric over a loader, keyed `<metric>/<key>`."""
    model.eval()
    for metric in metrics.values():
        metric.reset()
    loss_sum = torch.zeros((), device=device)
    batches = 0
    for images, masks in loader:
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        with autocast_for(config.train.amp, device):
            logits = forward(model, images)
            if loss_fn is not None:
                loss_sum += loss_fn(logits, masks).float()
        batches += 1
        predicted = predictions(logits.float(), config.train.threshold)
        for metric in metrics.values():
            metric.update(predicted, masks)
    mean_loss = loss_sum / max(1, batches)
    if context is not None and context.enabled:
        mean_loss = distributed.mean_across(mean_loss)
        for metric in metrics.values():
            distributed.sum_metric_state(metric)
    results: dict[str, Any] = {}
    if loss_fn is not None:
        results["val/loss"] = float(mean_loss)
    for name, metric in metrics.items():
        for key, value in metric.compute().items():
            results[f"{name}/{key}"] = value
    return results


def _improved(value: Any, best: float | None, mode: str) -> bool:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def fit(
    config: RunConfig | None,
    *,
    max_steps: int | None = None,
    resume: Path | None = None,
    reporter: Reporter | None = None,
) -> Path:
    """Train a configuration to the end (or `max_steps`); returns the run folder.

    With `resume`, the configuration, weights, optimiser, scheduler, RNG and progress come
    from the run folder's `last` checkpoint, and training continues where it ended.
    """
    checkpoint = None
    if resume is not None:
        config, checkpoint = _resume_point(resume)
    if config is None:
        raise ConfigError("nothing to train: give a configuration or a run to resume")
    context = distributed.start(config.train.device)
    try:
        return _fit(config, context, max_steps, checkpoint, reporter or _Silent())
    finally:
        distributed.stop(context)


def _fit(
    config: RunConfig,
    context: distributed.Distributed,
    max_steps: int | None,
    checkpoint: Any,
    reporter: Reporter,
) -> Path:
    plugins = get_plugins()
    root = ensure_dataset(config) if context.is_main else config.dataset_path()
    if context.enabled:
        torch.distributed.barrier()  # rank 0 may have prepared the dataset
    info = read_dataset_info(root)
    check_run(config, info, plugins)  # before the run folder: a bad value leaves none behind
    seed_everything(config.train.seed, config.train.deterministic)
    device = resolve_device(config.train.device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    model = build_model(config, info, plugins)
    if config.model.weights:
        _load_weights(model, Path(config.model.weights))
    model.to(device)
    if config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config, info, plugins)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    metrics = build_metrics(config, info, plugins)

    train_set = SegmentationDataset(
        root,
        config.dataset.train_split,
        build_transforms(config.input, config.augment, info.image_channels),
        config.train.seed,
        info,
    )
    train_sampler = EpochSampler(
        len(train_set),
        shuffle=True,
        seed=config.train.seed,
        rank=context.rank,
        world_size=context.world_size,
    )
    train_loader = make_loader(train_set, train_sampler, config, device)
    validate = config.dataset.val_split in info.labelled_splits
    val_loader = None
    if validate:
        val_set = SegmentationDataset(
            root,
            config.dataset.val_split,
            build_transforms(config.input, None, info.image_channels),
            config.train.seed,
            info,
        )
        val_sampler = EpochSampler(
            len(val_set), shuffle=False, rank=context.rank, world_size=context.world_size
        )
        val_loader = make_loader(val_set, val_sampler, config, device)
    monitor = config.train.monitor if validate else "train/loss"
    mode = config.train.monitor_mode if validate else "min"

    steps_per_epoch = math.ceil(len(train_loader) / max(1, config.train.accumulate))
    optimizer = build_optimizer(config, model, plugins)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch, plugins)
    scaler = torch.amp.GradScaler("cuda") if config.train.amp == "fp16" else None
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
    evaluated = ema.module if ema is not None else model

    if checkpoint is not None:
        run_dir = checkpoint.path.parent
        state = _restore(checkpoint, model, optimizer, scheduler, scaler, ema)
        if context.is_main:
            _forget_metrics_after(run_dir, state.epoch)
            remove_stale_temporaries(run_dir)  # a checkpoint write cut short by a kill
        new_runs_dir = False
    else:
        state = TrainingState()
        new_runs_dir = context.is_main and not Path(config.runs_dir).exists()
        run_dir = (
            Path(
                distributed.broadcast_text(
                    str(create_run_dir(config)) if context.is_main else None, context
                )
            )
            if context.enabled
            else create_run_dir(config)
        )
        if context.is_main:
            record_run(run_dir, config)
    meta = checkpoint_meta(config, info)
    writer = _tensorboard(run_dir) if config.log.tensorboard and context.is_main else None
    if context.is_main:
        reporter.start(run_dir, config.train.epochs, len(train_loader))

    try:
        while state.epoch < config.train.epochs:
            train_sampler.set_epoch(state.epoch)
            started = time.perf_counter()
            train_loss = train_one_epoch(
                trained,
                train_loader,
                loss_fn,
                optimizer,
                scheduler,
                config,
                device,
                state,
                scaler=scaler,
                ema=ema,
                reporter=reporter if context.is_main else None,
                max_steps=max_steps,
            )
            if context.enabled:
                train_loss = distributed.mean_across(train_loss)
            stopping = max_steps is not None and state.step >= max_steps
            record: dict[str, Any] = {
                "epoch": state.epoch + 1,
                "step": state.step,
                "lr": optimizer.param_groups[0]["lr"],
                "train/loss": float(train_loss),
            }
            final = state.epoch + 1 == config.train.epochs or stopping
            if val_loader is not None and (
                (state.epoch + 1) % max(1, config.train.val_every) == 0 or final
            ):
                record.update(
                    evaluate(evaluated, val_loader, loss_fn, metrics, device, config, context)
                )
                if monitor not in record:
                    scalars = ", ".join(k for k, v in record.items() if isinstance(v, float))
                    raise ConfigError(
                        f"train.monitor {monitor!r} is not reported; choose one of: {scalars}"
                    )
            record["seconds"] = round(time.perf_counter() - started, 3)
            state.epoch += 1
            if monitor in record:
                if _improved(record[monitor], state.best, mode):
                    state.best, state.best_epoch = float(record[monitor]), record["epoch"]
                    state.epochs_without_improvement = 0
                    if context.is_main:
                        save_checkpoint(
                            run_dir / f"best{SUFFIX}",
                            evaluated.state_dict(),
                            {**meta, "epoch": record["epoch"], "metrics": record},
                        )
                else:
                    state.epochs_without_improvement += 1
            if context.is_main:
                _append_metrics(run_dir, record)
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, float):
                            writer.add_scalar(key, value, record["epoch"])
                save_checkpoint(
                    run_dir / f"last{SUFFIX}",
                    evaluated.state_dict(),
                    {**meta, "epoch": state.epoch, "metrics": record},
                    _training_state(state, model, optimizer, scheduler, scaler, ema),
                )
                reporter.epoch_end(record, state.best)
            patience = config.train.early_stop_patience
            if stopping or (patience > 0 and state.epochs_without_improvement >= patience):
                break
    except BaseException as error:
        # a new run that ends before its first checkpoint leaves nothing worth a run folder
        discarded = (
            checkpoint is None
            and context.is_main
            and discard_run_without_checkpoint(run_dir, remove_empty_parent=new_runs_dir)
        )
        if isinstance(error, KeyboardInterrupt):
            raise Interrupted(interrupted_message(run_dir, discarded)) from None
        if isinstance(error, torch.cuda.OutOfMemoryError):
            raise ResourceError(
                "the GPU ran out of memory during training; the last checkpoint is intact",
                hint=f"lower train.batch_size (now {config.train.batch_size}) or input.size, "
                "or use --set train.accumulate=2",
            ) from None
        raise
    finally:
        if writer is not None:
            writer.close()
    if context.is_main:
        summary = {
            "best": state.best,
            "best_epoch": state.best_epoch,
            "monitor": monitor,
            "mode": mode,
            "epochs_run": state.epoch,
            "steps": state.step,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        from segcli.visualize import curves, save_picture

        save_picture(curves([run_dir]), run_dir / "curves.png")
    return run_dir


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "log.tensorboard=true needs the tensorboard package, which is not installed",
            hint="pip install tensorboard, or drop --set log.tensorboard=true",
        ) from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def checkpoint_meta(config: RunConfig, info: DatasetInfo) -> dict[str, Any]:
    """What every checkpoint carries besides weights: enough to rebuild and use the model."""
    return {
        "config": config.to_dict(),
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in info.classes],
        "image_channels": info.image_channels,
        "dataset": info.name,
        "model": model_record(config, info),
        "environment": environment(),
    }


def _training_state(
    state: TrainingState, model, optimizer, scheduler, scaler, ema
) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "progress": asdict(state),
        # `last` holds the EMA weights as its model weights, so the raw ones travel here
        "raw_model": model.state_dict() if ema is not None else None,
        "ema_updates": int(ema.n_averaged) if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "rng": rng,
    }


def _resume_point(spec: Path) -> tuple[RunConfig, Any]:
    run_dir = Path(spec)
    if run_dir.is_file():
        run_dir = run_dir.parent
    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (it has no config.toml)")
    last = run_dir / f"last{SUFFIX}"
    if not last.is_file():
        raise CheckpointError(
            f"{run_dir} has no last{SUFFIX} to resume from",
            hint="the run stopped before its first epoch ended; start it again",
        )
    return (
        build_config(config_file=run_dir / "config.toml"),
        load_checkpoint(last, with_training_state=True),
    )


def _restore(checkpoint, model, optimizer, scheduler, scaler, ema) -> TrainingState:
    saved = checkpoint.training_state
    if saved is None:
        raise CheckpointError(f"{checkpoint.path} holds no training state to resume from")
    if ema is not None:
        load_model_state(model, saved["raw_model"], checkpoint.path)
        load_model_state(ema.module, checkpoint.model_state, checkpoint.path)
        ema.n_averaged.fill_(saved["ema_updates"])
    else:
        load_model_state(model, checkpoint.model_state, checkpoint.path)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return TrainingState(**saved["progress"])


def _load_weights(model: nn.Module, path: Path) -> None:
    from segcli.weights import load_weights_into

    load_weights_into(model, path)


def _forget_metrics_after(run_dir: Path, epoch: int) -> None:
    """Keep only the records of epochs up to `last`: later ones, and a line torn by a crash in
    the middle of an append, are what a killed process leaves behind."""
    from segcli.data.io import atomic_write

    records = [r for r in read_metrics(run_dir) if r["epoch"] <= epoch]
    with atomic_write(run_dir / "metrics.jsonl") as stream:
        stream.write("".join(json.dumps(r) + "\n" for r in records).encode())
    _write_metrics_csv(run_dir, [_scalars(r) for r in records])


def _append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as stream:
        stream.write(json.dumps(record) + "\n")
    path = run_dir / "metrics.csv"
    rows = []
    if path.exists():
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
    _write_metrics_csv(run_dir, [*rows, _scalars(record)])


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float))}


def _write_metrics_csv(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = run_dir / "metrics.csv"
    temporary = path.with_suffix(".csv.tmp")
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)
