"""Training a configuration: `fit` puts the parts together and runs the epochs.

The parts live next door: `setup` (dataset, model, loaders: the parts an epoch works with),
`loop` (train_one_epoch, evaluate), `optimisation` (optimiser and schedule from their
plugins), `checkpointing` (BestTracker, training state, resume) and `runlog` (metrics files,
TensorBoard). Pictures are the caller's: the CLI's reporter draws curves.png in `run_end`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from segcli.config import RunConfig
from segcli.data.format import read_dataset_info
from segcli.data.io import remove_stale_temporaries
from segcli.engine import distributed
from segcli.engine.checkpoint import SUFFIX, save_checkpoint
from segcli.engine.checkpointing import (
    BestTracker,
    checkpoint_meta,
    restore,
    resume_point,
    training_state,
)
from segcli.engine.loop import (
    Reporter,
    SilentReporter,
    TrainingState,
    evaluate,
    make_loader,
    train_one_epoch,
)
from segcli.engine.preflight import check_run
from segcli.engine.runlog import RunLog
from segcli.engine.runs import (
    create_run_dir,
    discard_run_without_checkpoint,
    interrupted_message,
    record_run,
)
from segcli.engine.setup import RunParts, build_parts, ensure_dataset, seed_everything
from segcli.errors import ConfigError, Interrupted, ResourceError
from segcli.plugins import get_plugins

__all__ = ["Reporter", "TrainingState", "checkpoint_meta", "fit", "make_loader", "train_one_epoch"]


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
        config, checkpoint = resume_point(resume)
    if config is None:
        raise ConfigError("nothing to train: give a configuration or a run to resume")
    context = distributed.start(config.train.device)
    try:
        return _fit(config, context, max_steps, checkpoint, reporter or SilentReporter())
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
    parts = build_parts(config, root, info, context, plugins)
    validate = parts.val_loader is not None
    monitor = config.train.monitor if validate else "train/loss"
    mode = config.train.monitor_mode if validate else "min"
    if checkpoint is not None:
        run_dir, new_runs_dir = checkpoint.path.parent, False
        state = restore(checkpoint, *_resumable(parts))
    else:
        new_runs_dir = context.is_main and not Path(config.runs_dir).exists()
        state, run_dir = TrainingState(), _new_run_dir(config, context)
    log = RunLog(run_dir, config.log.tensorboard) if context.is_main else None
    if log is not None and checkpoint is not None:
        log.forget_after(state.epoch)
        remove_stale_temporaries(run_dir)  # a checkpoint write cut short by a kill
    best = BestTracker(monitor, mode, state)
    meta = checkpoint_meta(config, info, parts.model)
    if context.is_main:
        reporter.start(run_dir, config.train.epochs, len(parts.train_loader))
    try:
        while state.epoch < config.train.epochs:
            record, stopping = _run_epoch(config, parts, state, context, reporter, max_steps)
            improved = best.update(record)
            if log is not None:
                weights = parts.evaluated.state_dict()
                if improved:
                    best_meta = {**meta, "epoch": state.epoch, "metrics": record}
                    save_checkpoint(run_dir / f"best{SUFFIX}", weights, best_meta)
                log.append(record)
                save_checkpoint(
                    run_dir / f"last{SUFFIX}",
                    weights,
                    {**meta, "epoch": state.epoch, "metrics": record},
                    training_state(state, *_resumable(parts)),
                )
                reporter.epoch_end(record, state.best)
            patience = config.train.early_stop_patience
            if stopping or (patience > 0 and state.epochs_without_improvement >= patience):
                break
    except BaseException as error:
        _fail(error, config, run_dir, checkpoint is None and context.is_main, new_runs_dir)
    finally:
        if log is not None:
            log.close()
    if log is not None:
        log.write_summary(
            {
                "best": state.best,
                "best_epoch": state.best_epoch,
                "monitor": monitor,
                "mode": mode,
                "epochs_run": state.epoch,
                "steps": state.step,
            }
        )
        reporter.run_end(run_dir)
    return run_dir


def _run_epoch(
    config: RunConfig,
    parts: RunParts,
    state: TrainingState,
    context: distributed.Distributed,
    reporter: Reporter,
    max_steps: int | None,
) -> tuple[dict[str, Any], bool]:
    """Train one epoch and validate when due; the epoch's record, and whether to stop."""
    parts.train_sampler.set_epoch(state.epoch)
    started = time.perf_counter()
    train_loss = train_one_epoch(
        parts.trained,
        parts.train_loader,
        parts.loss_fn,
        parts.optimizer,
        parts.scheduler,
        config,
        parts.device,
        state,
        scaler=parts.scaler,
        ema=parts.ema,
        reporter=reporter if context.is_main else None,
        max_steps=max_steps,
    )
    if context.enabled:
        train_loss = distributed.mean_across(train_loss)
    stopping = max_steps is not None and state.step >= max_steps
    record: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "lr": parts.optimizer.param_groups[0]["lr"],
        "train/loss": float(train_loss),
    }
    final = state.epoch + 1 == config.train.epochs or stopping
    if parts.val_loader is not None and (
        (state.epoch + 1) % max(1, config.train.val_every) == 0 or final
    ):
        record.update(
            evaluate(
                parts.evaluated,
                parts.val_loader,
                parts.loss_fn,
                parts.metrics,
                parts.device,
                config,
                context,
            )
        )
        if config.train.monitor not in record:
            scalars = ", ".join(k for k, v in record.items() if isinstance(v, float))
            raise ConfigError(
                f"train.monitor {config.train.monitor!r} is not reported; choose one of: {scalars}"
            )
    record["seconds"] = round(time.perf_counter() - started, 3)
    state.epoch += 1
    return record, stopping


def _resumable(parts: RunParts) -> tuple[Any, ...]:
    """What `last` saves and a resume restores, in `training_state`'s order."""
    return parts.model, parts.optimizer, parts.scheduler, parts.scaler, parts.ema


def _new_run_dir(config: RunConfig, context: distributed.Distributed) -> Path:
    if not context.enabled:
        run_dir = create_run_dir(config)
    else:
        made = str(create_run_dir(config)) if context.is_main else None
        run_dir = Path(distributed.broadcast_text(made, context))
    if context.is_main:
        record_run(run_dir, config)
    return run_dir


def _fail(
    error: BaseException, config: RunConfig, run_dir: Path, new_run: bool, new_runs_dir: bool
) -> None:
    """Re-raise a failure of the epoch loop as the user should see it."""
    # a new run that ends before its first checkpoint leaves nothing worth a run folder
    discarded = new_run and discard_run_without_checkpoint(
        run_dir, remove_empty_parent=new_runs_dir
    )
    if isinstance(error, KeyboardInterrupt):
        raise Interrupted(interrupted_message(run_dir, discarded)) from None
    if isinstance(error, torch.cuda.OutOfMemoryError):
        raise ResourceError(
            "the GPU ran out of memory during training; the last checkpoint is intact",
            hint=f"lower train.batch_size (now {config.train.batch_size}) or input.size, "
            "or use --set train.accumulate=2",
        ) from None
    raise error
