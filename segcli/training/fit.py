"""Training a configuration: `fit` puts the parts together and runs the epochs.

The parts live next door: `setup` (dataset, model, loaders: the parts an epoch works with),
`loop` (train_one_epoch), `optimisation` (optimiser and schedule from their plugins),
`resume` (BestTracker, training state, resume) and `segcli.runs.log` (metrics files,
TensorBoard); validation is `segcli.evaluation.validation`'s, the one scoring path.
Pictures are the caller's: the CLI's reporter draws curves.png in `run_end`.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segcli.building import PluginCalls
from segcli.config import RunConfig
from segcli.data.folds import Pair, fold_pairs
from segcli.data.format import DatasetInfo, read_dataset_info
from segcli.errors import ConfigError, Interrupted, ResourceError, UsageError
from segcli.evaluation.postprocess_search import (
    ChoiceImages,
    choice_images,
    flips_to_try,
    learn_post_processing,
    record_post_processing,
)
from segcli.evaluation.split import labelled_pairs
from segcli.evaluation.validation import validate
from segcli.files import remove_stale_temporaries
from segcli.inference.postprocessing import PostProcessing
from segcli.inference.predictor import TTA_VIEWS
from segcli.plugins import get_plugins
from segcli.runs.checkpoint_file import SUFFIX, save_checkpoint
from segcli.runs.folders import (
    create_run_dir,
    discard_run_without_checkpoint,
    interrupted_message,
    record_run,
    run_lock,
    write_config,
)
from segcli.runs.log import RunLog
from segcli.training import distributed
from segcli.training.budget import BudgetPacer, Clock, Stopwatch, TimeBudget
from segcli.training.loop import (
    Reporter,
    SilentReporter,
    TrainingState,
    check_finite,
    make_loader,
    train_one_epoch,
)
from segcli.training.preflight import check_run
from segcli.training.resume import (
    BestTracker,
    Extension,
    checkpoint_meta,
    extend_run,
    restore,
    resume_point,
    start_segment,
    training_state,
)
from segcli.training.setup import RunParts, build_parts, ensure_dataset, seed_everything

# Under a time budget, `last` is written at least this often (and at every validation).
LAST_EVERY_SECONDS = 30.0
# What choosing post-processing costs (docs/training.md). Each prediction of the validation
# images at their own size (the plain one, and one per flipped view a test-time augmentation
# tries) does a validation pass's model work, and reads every image from disk, predicts it in
# batches of 4 and resizes the prediction back (validation reads cached tensors): seconds per
# image and per pixel at its own size more. The rule search scores ~20 candidates on every
# pixel, and the per-image TGS score on every image. Fitted so that none falls short on the
# 2-core Xeon or the 2-core AMD EPYC (without AVX-512): TGS's 600 images of 101x101 (Xeon:
# passes of 7.0 s and a search of 1.7 s against validation passes of 1.8 s; AMD: 3.7 s, 3.6 s
# and 1.6 s), ~550x690 street photographs (200 at 96x120, Xeon: 4.9 s and 10.8 s against 1.3
# s), DRIVE's 20 of 565x584 (AMD: 8.0 s and 1.0 s against 14 s) and ISBI's 5 of 512x512
# (AMD: 1.7 s and 0.3 s against ~2 s). Counted in validation passes alone (5 for the plain
# pass and the search, 3.9 per more view), the reserve had kept ~140 s of DRIVE's 10 minutes
# unused.
OWN_SIZE_PASS_VALIDATIONS = 1.0
OWN_SIZE_IMAGE_SECONDS = 0.009
OWN_SIZE_PIXEL_SECONDS = 2.5e-8
SEARCH_IMAGE_SECONDS = 0.005
SEARCH_PIXEL_SECONDS = 2e-7

__all__ = ["Reporter", "TrainingState", "checkpoint_meta", "fit", "make_loader", "train_one_epoch"]


def fit(
    config: RunConfig | None,
    *,
    max_steps: int | None = None,
    resume: Path | None = None,
    reporter: Reporter | None = None,
    extension: Extension | None = None,
    plan: dict[str, Any] | None = None,
    clock: Clock = time.monotonic,
    started: float | None = None,
    finishing_validations: float = 0.0,
    run_dir: Path | None = None,
) -> Path:
    """Train a configuration to the end (or `max_steps`, or `train.max_time`); returns the run
    folder.

    With `resume`, the configuration, weights, optimiser, scheduler, RNG, progress and time
    spent come from the run folder's `last` checkpoint, and training continues where it
    ended; `extension` gives a run more epochs or time (a finished run needs one). `plan` (a
    planned run's layer and reasons, `segcli.planning`) is saved in a new run folder, which is
    `run_dir` when given (a cross-validation fold's), else a new folder in `runs_dir`.

    A time budget is the caller's whole command: `started` (a `clock` reading) is when it
    began, and `finishing_validations` how many validation passes' worth of work it does
    after `fit` returns (the CLI's run report); both are inside `train.max_time`.
    """
    # the budget counts from `started` (the command's start, so planning counts) or from here:
    # setup and dataset loading included
    watch = Stopwatch(clock, started)
    checkpoint, new_segment, extended = None, False, False
    if resume is not None:
        saved, checkpoint = resume_point(resume)
        config, new_segment = extend_run(saved, checkpoint, extension or Extension())
        extended = config != saved
    if config is None:
        raise ConfigError("nothing to train: give a configuration or a run to resume")
    context = distributed.start(config.train.device)
    try:
        with ExitStack() as locks:  # the run folder is this process's until fit ends
            if checkpoint is not None and context.is_main:
                locks.enter_context(run_lock(checkpoint.path.parent))
            if extended and context.is_main:
                write_config(checkpoint.path.parent, config)  # what it now trains for
            return _fit(
                config,
                context,
                max_steps,
                checkpoint,
                reporter or SilentReporter(),
                watch,
                new_segment,
                plan,
                locks,
                finishing_validations,
                run_dir,
            )
    finally:
        distributed.stop(context)


def _fit(
    config: RunConfig,
    context: distributed.Distributed,
    max_steps: int | None,
    checkpoint: Any,
    reporter: Reporter,
    watch: Stopwatch,
    new_segment: bool,
    plan: dict[str, Any] | None,
    locks: ExitStack,
    finishing_validations: float,
    new_run_dir: Path | None,
) -> Path:
    plugins = get_plugins()
    root = ensure_dataset(config) if context.is_main else config.dataset_path()
    if context.enabled:
        torch.distributed.barrier()  # rank 0 may have prepared the dataset
    info = read_dataset_info(root)
    check_run(config, info, plugins)  # before the run folder: a bad value leaves none behind
    seed_everything(config.train.seed, config.train.deterministic)
    parts = build_parts(_without_pretrained(config, checkpoint), root, info, context, plugins)
    validate = parts.val_loader is not None
    monitor = config.train.monitor if validate else "train/loss"
    mode = config.train.monitor_mode if validate else "min"
    if checkpoint is not None:
        run_dir, new_runs_dir = checkpoint.path.parent, False
        state = restore(checkpoint, *_resumable(parts))
        watch.carry(state.seconds)
        _continue_schedule(config, parts, state, new_segment)
        if new_segment:
            state = start_segment(state)
    else:
        new_runs_dir = context.is_main and not Path(config.runs_dir).exists()
        state = TrainingState()
        run_dir = _new_run_dir(config, context, plan, locks, new_run_dir)
    learns = _learns_post_processing(config, info, validate)
    reserve = post_processing_reserve(
        config, learns, _choice_images(config, root, info) if learns else None
    )
    finishing = Reserve(finishing_validations + reserve.validations, reserve.seconds)
    pacer = _pacer(config, parts, state, context, watch, finishing)
    log = RunLog(run_dir, config, plugins) if context.is_main else None
    if log is not None and checkpoint is not None:
        log.forget_after(state.epoch)
        remove_stale_temporaries(run_dir)  # a checkpoint write cut short by a kill
    best = BestTracker(monitor, mode, state)
    # the dataset's own folder, so that a report or evaluation run from any folder finds it
    meta = {**checkpoint_meta(config, info, parts.model), "dataset_path": str(root.resolve())}
    calls = PluginCalls.of(config, meta["model"]["outputs"], plugins)
    if context.is_main:
        reporter.start(
            run_dir,
            config.train.epochs,
            len(parts.train_loader),
            max_time=config.train.max_time,
            spent=watch.elapsed(),
        )
    last_written = watch.clock()
    try:
        watch.switch("training")
        while state.epoch < config.train.epochs:
            record, stopping = _run_epoch(
                config, parts, state, context, reporter, max_steps, watch, pacer, calls
            )
            improved = best.update(record)
            state.stopped = _stop_reason(config, state, stopping)
            watch.switch("checkpoints")
            if log is not None:
                weights = parts.evaluated.state_dict()
                if improved:
                    best_meta = {**meta, "epoch": state.epoch, "metrics": record}
                    save_checkpoint(run_dir / f"best{SUFFIX}", weights, best_meta)
                log.append(record)
                state.seconds = watch.spent()
                if _last_due(config, record, improved, state, watch.clock() - last_written):
                    save_checkpoint(
                        run_dir / f"last{SUFFIX}",
                        weights,
                        {**meta, "epoch": state.epoch, "metrics": record},
                        training_state(state, *_resumable(parts)),
                    )
                    last_written = watch.clock()
                reporter.epoch_end(record, state.best)
            writing = watch.switch("training")
            if pacer is not None:
                pacer.budget.timed_checkpoints(writing)
            if state.stopped is not None:
                break
    except BaseException as error:
        if log is not None:
            log.close()  # before _fail, which may remove the run folder
        _fail(error, config, run_dir, checkpoint is None and context.is_main, new_runs_dir)
    if log is None:
        return run_dir
    # the loggers close last: MLflow marks its run finished and takes summary and pictures
    try:
        learned = None
        if learns and (run_dir / f"best{SUFFIX}").is_file():
            watch.switch("post-processing")
            best_path = run_dir / f"best{SUFFIX}"
            left = (
                None if config.train.max_time is None else config.train.max_time - watch.elapsed()
            )
            learned = _post_processing(config, best_path, root, info, monitor, mode, left)
        spent = watch.spent()
        log.write_summary(
            {
                "post_processing": learned,
                "best": state.best,
                "best_epoch": state.best_epoch,
                "monitor": monitor,
                "mode": mode,
                "epochs_run": state.epoch,
                "steps": state.step,
                "stopped": state.stopped,
                "seconds": {
                    "budget": config.train.max_time,
                    "total": round(sum(spent.values()), 3),
                    **{phase: round(seconds, 3) for phase, seconds in spent.items()},
                },
            }
        )
        reporter.run_end(run_dir)
    finally:
        log.close()
    return run_dir


def _learns_post_processing(config: RunConfig, info: DatasetInfo, validate: bool) -> bool:
    return config.train.post_process and validate and len(info.classes) == 2


@dataclass(frozen=True)
class Reserve:
    """Time kept from a budget for work after the last epoch: validation passes (measured
    during the run) and seconds."""

    validations: float = 0.0
    seconds: float = 0.0


def post_processing_reserve(
    config: RunConfig, learns: bool, images: ChoiceImages | None = None
) -> Reserve:
    """What choosing post-processing costs a run that `learns` it, kept from its budget: its
    own choice predicts the validation `images` at their own size, plain and in each flipped
    view a test-time augmentation tried adds, and scores its rules on them; a cross-validation
    fold's images are predicted so once more, when the ensemble's choice is made on the
    out-of-fold predictions after the last fold, so that the whole `train --folds K --time T`
    ends within T."""
    if not learns:
        return Reserve()
    # the plain view is predicted once; each augmentation tried adds its other views
    passes = 1 + sum(len(TTA_VIEWS[tta]) - 1 for tta in flips_to_try(config.augment))
    images = images or ChoiceImages(0, 0)
    per_pass = images.count * OWN_SIZE_IMAGE_SECONDS + images.pixels * OWN_SIZE_PIXEL_SECONDS
    search = images.count * SEARCH_IMAGE_SECONDS + images.pixels * SEARCH_PIXEL_SECONDS
    folds = 2 if config.dataset.fold is not None else 1
    return Reserve(
        validations=folds * passes * OWN_SIZE_PASS_VALIDATIONS,
        seconds=folds * (passes * per_pass + search),
    )  # fmt: skip


def _post_processing_pairs(config: RunConfig, root: Path, info: DatasetInfo) -> list[Pair]:
    """The (image, mask) files post-processing is chosen on: the fold's validation images, or
    the validation split's; one answer for the budget's reserve and for the choice."""
    return fold_pairs(config, root, info, "val") or labelled_pairs(root, config.dataset.val_split)


def _choice_images(config: RunConfig, root: Path, info: DatasetInfo) -> ChoiceImages | None:
    """The images this run's post-processing will be chosen on, when a budget needs them."""
    if config.train.max_time is None:
        return None  # nothing to budget
    return choice_images(_post_processing_pairs(config, root, info))


def _post_processing(
    config: RunConfig,
    best: Path,
    root: Path,
    info: DatasetInfo,
    monitor: str,
    mode: str,
    seconds: float | None,
) -> dict[str, Any] | None:
    """Choose the post-processing of `best` on the validation images (test-time flips only
    while they fit in `seconds`, what is left of a budget) and record it in the checkpoint
    when it changes anything; what was chosen, with the monitored metric before and after (at
    the images' own size), for the summary."""
    choice = learn_post_processing(
        best,
        root,
        config.dataset.val_split,
        pairs=_post_processing_pairs(config, root, info),
        monitor=monitor,
        maximize=mode == "max",
        device=config.train.device,
        seconds=seconds,
    )
    if choice is None:
        return None
    summary = choice.summary(monitor, PostProcessing(threshold=config.train.threshold))
    record_post_processing(best, choice.rules if summary["rules"] else None, choice.tta)
    return summary


def _without_pretrained(config: RunConfig, checkpoint: Any) -> RunConfig:
    """A resumed run's model gets every weight from `last`: fetching its backbone's published
    weights again would only cost time, or fail offline."""
    if checkpoint is None or not config.model.backbone_weights:
        return config
    rebuilt = config.model_copy(deep=True)
    rebuilt.model.backbone_weights = None
    return rebuilt


def _last_due(
    config: RunConfig, record: dict[str, Any], improved: bool, state: TrainingState, age: float
) -> bool:
    """Whether this epoch end writes `last`: always, except under a time budget, where an
    epoch without validation writes it only every LAST_EVERY_SECONDS (ISBI's one-second
    epochs spent 6 % of an 8-minute budget rewriting it). A resume starts from the last one
    written; metrics recorded after it are dropped then, as after a kill."""
    if config.train.max_time is None or improved or state.stopped is not None:
        return True
    return config.train.monitor in record or age >= LAST_EVERY_SECONDS


def _stop_reason(config: RunConfig, state: TrainingState, stopping: str | None) -> str | None:
    """Why the run ends after this epoch (None: it goes on)."""
    patience = config.train.early_stop_patience
    if stopping == "budget":
        return stopping
    if state.epoch >= config.train.epochs:
        return "epochs"
    if patience > 0 and state.epochs_without_improvement >= patience:
        return "early-stop"
    return stopping


def _run_epoch(
    config: RunConfig,
    parts: RunParts,
    state: TrainingState,
    context: distributed.Distributed,
    reporter: Reporter,
    max_steps: int | None,
    watch: Stopwatch,
    pacer: BudgetPacer | None,
    calls: PluginCalls,
) -> tuple[dict[str, Any], str | None]:
    """Train one epoch and validate when due; the epoch's record, and why to stop (budget,
    max-steps) or None."""
    parts.train_sampler.set_epoch(state.epoch)
    started, steps_before = time.perf_counter(), state.step
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
        pacer=pacer,
        calls=calls,
    )
    if context.enabled:
        train_loss = distributed.mean_across(train_loss)
    check_finite(parts.trained, float(train_loss), state.epoch, state.step, config.train.lr)
    if state.step == steps_before and pacer is not None and pacer.stopped:
        raise _budget_too_short(config, watch)
    stopping = "max-steps" if max_steps is not None and state.step >= max_steps else None
    record: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "lr": parts.optimizer.param_groups[0]["lr"],
        "train/loss": float(train_loss),
    }
    due = (state.epoch + 1) % max(1, config.train.val_every) == 0
    validating = parts.val_loader is not None and due
    if (
        stopping is None
        and pacer is not None
        and (pacer.stopped or not pacer.another_epoch_fits(validating))
    ):
        stopping = "budget"  # this epoch end is the run's end: its validation is the final one
    final = state.epoch + 1 == config.train.epochs or stopping is not None
    if parts.val_loader is not None and (due or final):
        watch.switch("validation")
        record.update(
            validate(
                parts.evaluated,
                parts.val_loader,
                parts.loss_fn,
                parts.metrics,
                parts.device,
                config,
                across_processes=context.enabled,
                calls=calls,
            )
        )
        validation = watch.switch("training")
        if pacer is not None:
            pacer.budget.timed_validation(validation)
        if config.train.monitor not in record:
            scalars = ", ".join(k for k, v in record.items() if isinstance(v, float))
            raise ConfigError(
                f"train.monitor {config.train.monitor!r} is not reported; choose one of: {scalars}"
            )
    record["seconds"] = round(time.perf_counter() - started, 3)
    state.epoch += 1
    return record, stopping


def _budget_too_short(config: RunConfig, watch: Stopwatch) -> UsageError:
    """An epoch without a single step: a model that learnt nothing must not become `best`."""
    spent = watch.spent()
    return UsageError(
        f"the time budget of {config.train.max_time:g} s was used up before a training step "
        f"(setup took {spent['setup']:.1f} s, {watch.elapsed():.1f} s in all)",
        hint="give it more time, e.g. --time 5m (or --time +5m with --resume)",
    )


def _pacer(
    config: RunConfig,
    parts: RunParts,
    state: TrainingState,
    context: distributed.Distributed,
    watch: Stopwatch,
    finishing: Reserve,
) -> BudgetPacer | None:
    """The time budget's pacer when `train.max_time` is set."""
    if config.train.max_time is None:
        return None
    layout = parts.scheduler.layout
    budget = TimeBudget(
        config.train.max_time,
        watch,
        steps_per_epoch=layout.steps_per_epoch,
        validation_batches=len(parts.val_loader) if parts.val_loader is not None else 0,
        val_every=config.train.val_every,
        checkpoint_bytes=sum(
            t.numel() * t.element_size() for t in parts.model.state_dict().values()
        ),
        finishing_validations=finishing.validations,
        finishing_seconds=finishing.seconds,
    )

    def agree(count: int) -> int:
        # under torchrun every process takes the smallest count of steps that fit: all stop
        # together
        return distributed.min_across(count, parts.device) if context.enabled else count

    return BudgetPacer(budget, layout, state, config.train.epochs, agree)


def _continue_schedule(
    config: RunConfig, parts: RunParts, state: TrainingState, new_segment: bool
) -> None:
    """A resumed run's schedule: its segment over the (maybe extended) epochs, or a new one
    starting at this step for a finished run given more."""
    scheduler = parts.scheduler
    start_step, start_epoch = (
        (state.step, state.epoch) if new_segment else (state.segment_step, state.segment_epoch)
    )
    layout = scheduler.layout
    layout.begin_segment(start_step, (config.train.epochs - start_epoch) * layout.steps_per_epoch)
    if new_segment:
        scheduler.set_current(state.step)


def _resumable(parts: RunParts) -> tuple[Any, ...]:
    """What `last` saves and a resume restores, in `training_state`'s order."""
    return parts.model, parts.optimizer, parts.scheduler, parts.scaler, parts.ema


def _new_run_dir(
    config: RunConfig,
    context: distributed.Distributed,
    plan: dict[str, Any] | None,
    locks: ExitStack,
    path: Path | None,
) -> Path:
    if not context.enabled:
        run_dir = create_run_dir(config, path)
    else:
        made = str(create_run_dir(config, path)) if context.is_main else None
        run_dir = Path(distributed.broadcast_text(made, context))
    if context.is_main:
        locks.enter_context(run_lock(run_dir))
        record_run(run_dir, config, plan)
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
