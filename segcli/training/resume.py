"""What a run saves to continue or to be used: the best-checkpoint rule, the training state
in `last`, and resuming from it. (The file format itself is `segcli.runs.checkpoint_file`.)"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from segcli.building import model_record
from segcli.config import (
    MAX_EPOCHS,
    MAX_TIME_SECONDS,
    RunConfig,
    build_config,
    parse_override,
)
from segcli.data.format import DatasetInfo
from segcli.errors import CheckpointError, UsageError
from segcli.inference.preprocessing import preprocessing_record
from segcli.runs.checkpoint_file import (
    SUFFIX,
    json_kind,
    load_checkpoint,
    load_model_state,
    read_checkpoint_meta,
)
from segcli.runs.folders import environment
from segcli.training.loop import TrainingState
from segcli.weights import pretrained_record

# Why a run ended, when it is finished: resuming it needs an extension (`Extension`).
FINISHED = {
    "budget": "its time budget is used",
    "epochs": "it ran all its epochs",
    "early-stop": "it stopped early (train.early_stop_patience)",
}
# What `--resume` may change; everything else is the run's own configuration.
EXTENSION_KEYS = ("train.epochs", "train.max_time")
# The epoch limit of a run extended by time alone after it ran all its epochs: time decides.
NO_EPOCH_LIMIT = MAX_EPOCHS


class BestTracker:
    """The one rule for `best`: a number strictly better than every earlier one in `mode`.

    A missing value, a non-number, NaN or infinity is never an improvement. The tracker lives in the
    `TrainingState`, so a resumed run keeps comparing with the best before the interruption.
    """

    def __init__(self, monitor: str, mode: Literal["max", "min"], state: TrainingState) -> None:
        self.monitor = monitor
        self.mode = mode
        self.state = state

    def improves(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):  # NaN, or the infinite loss of a diverged run
            return False
        best = self.state.best
        return best is None or (value > best if self.mode == "max" else value < best)

    def update(self, record: dict[str, Any]) -> bool:
        """Account for one epoch's record; True when it is the new best (save it)."""
        if self.monitor not in record:
            return False
        value = record[self.monitor]
        if self.improves(value):
            self.state.best, self.state.best_epoch = float(value), record["epoch"]
            self.state.epochs_without_improvement = 0
            return True
        self.state.epochs_without_improvement += 1
        return False


def checkpoint_meta(config: RunConfig, info: DatasetInfo, model: nn.Module) -> dict[str, Any]:
    """What every checkpoint carries besides weights: enough to rebuild and use the model."""
    return {
        "config": config.to_dict(),
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in info.classes],
        "image_channels": info.image_channels,
        "dataset": info.name,
        "model": model_record(config, info),
        # the published or local file the backbone started from (name, url, sha256)
        "pretrained": pretrained_record(model),
        "preprocessing": preprocessing_record(config, info.image_channels, model),
        "environment": environment(),
    }


def training_state(
    state: TrainingState, model, optimizer, scheduler, scaler, ema
) -> dict[str, Any]:
    """Everything besides the weights that a resumed run needs to continue bit for bit."""
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


def resume_point(spec: Path) -> tuple[RunConfig, Any]:
    """The configuration and `last` checkpoint of a run folder (or of the file given)."""
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
    try:
        checkpoint = load_checkpoint(last, with_training_state=True)
    except CheckpointError as error:  # the same line, with a way on that does not need `last`
        raise CheckpointError(error.message, hint=_way_on(run_dir, error)) from None
    if checkpoint.training_state is not None:
        try:
            check_training_state(checkpoint.training_state)
        except ValueError as error:
            raise damaged_state(last, str(error)) from None
    return build_config(config_file=run_dir / "config.toml"), checkpoint


# The training state `last` holds and the type each part must have (`training_state`).
STATE_PARTS: dict[str, tuple[type, ...]] = {
    "progress": (dict,),
    "raw_model": (dict, type(None)),
    "ema_updates": (int, type(None)),
    "optimizer": (dict,),
    "scheduler": (dict,),
    "scaler": (dict, type(None)),
    "rng": (dict,),
}


def check_training_state(saved: Any) -> None:
    """A ValueError naming the part of a saved training state that has the wrong shape or
    type: caught before anything is built or written, rather than as a traceback midway."""
    if not isinstance(saved, dict):
        raise ValueError(f"it is {json_kind(saved)}, not an object")
    for part, kinds in STATE_PARTS.items():
        if part not in saved and type(None) not in kinds:
            raise ValueError(f"its {part} is missing")
        if not isinstance(saved.get(part), kinds):
            raise ValueError(f"its {part} is {json_kind(saved[part])}")
    progress_from(saved)
    generator = saved["rng"].get("torch")
    if not (isinstance(generator, torch.Tensor) and generator.dtype == torch.uint8):
        raise ValueError("its RNG state is not a byte tensor")
    if not isinstance(saved["optimizer"].get("param_groups"), list):
        raise ValueError("its optimizer state has no parameter groups")


def progress_from(saved: dict[str, Any]) -> TrainingState:
    """The saved progress (epoch, step, best, time spent); a ValueError when it is damaged."""
    try:
        state = TrainingState(**saved["progress"])
    except TypeError as error:
        raise ValueError(f"its progress does not fit this segcli ({error})") from None
    numbers = (state.epoch, state.step, state.epochs_without_improvement)
    numbers += (state.segment_step, state.segment_epoch)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise ValueError("its progress holds a count that is not a whole number >= 0")
    if not isinstance(state.seconds, dict) or not all(
        isinstance(v, (int, float)) for v in state.seconds.values()
    ):
        raise ValueError("its progress holds time spent that is not in seconds")
    return state


def damaged_state(path: Path, what: str) -> CheckpointError:
    """`last` cannot be resumed from: say what is wrong and how to go on without it."""
    return CheckpointError(
        f"cannot resume from {path}: its training state is damaged: {what}",
        hint=without_last(path.parent),
    )


def _way_on(run_dir: Path, error: CheckpointError) -> str | None:
    """How to go on when `last` cannot be read: without it (`without_last`), unless `best`
    cannot be read either (a newer segcli wrote both): then the error's own hint."""
    best = run_dir / f"best{SUFFIX}"
    try:
        if best.is_file():
            read_checkpoint_meta(best)
    except CheckpointError:
        return error.hint
    return without_last(run_dir)


def without_last(run_dir: Path) -> str:
    """How to go on when a run's `last` cannot be resumed: a new run from its best weights
    (a new run, as `best` holds no optimiser state), or from the start."""
    config = shlex.quote(str(run_dir / "config.toml"))
    best = run_dir / f"best{SUFFIX}"
    if not best.is_file():
        return f"start it anew: segcli train --config {config}"
    return (
        f"start a new run from its best weights: segcli train --config {config} "
        f"--set {shlex.quote(f'model.weights={best}')}"
    )


@dataclass(frozen=True)
class Extension:
    """What a resumed run may change: `train.epochs` and `train.max_time` as `--set`
    overrides, and seconds added to its budget (`--time +5m`; to the time it has spent when
    it had no budget)."""

    overrides: tuple[str, ...] = ()
    added_seconds: float | None = None


def extend_run(config: RunConfig, checkpoint: Any, extension: Extension) -> tuple[RunConfig, bool]:
    """The configuration a resumed run continues with, and whether it starts a new schedule
    segment (a finished run given more time or epochs). A finished run without an extension,
    or an extension that gives it nothing more to do, is refused."""
    run_dir = checkpoint.path.parent
    saved = checkpoint.training_state
    if saved is None:  # `restore` says so
        return config, False
    progress = progress_from(saved)
    for override in extension.overrides:
        key, _ = parse_override(override)
        if key not in EXTENSION_KEYS:
            raise UsageError(
                f"--resume continues {run_dir} with its saved configuration; --set {override} "
                f"would change it (only {' and '.join(EXTENSION_KEYS)} may change)",
                hint="start a new run with --config " + str(run_dir / "config.toml"),
            )
    extended = build_config(
        config_file=run_dir / "config.toml",
        overrides=list(extension.overrides),
    )
    spent = sum(progress.seconds.values())
    if extension.added_seconds is not None:
        budget = extended.train.max_time
        seconds = (spent if budget is None else budget) + extension.added_seconds
        if seconds > MAX_TIME_SECONDS:
            raise UsageError(
                f"--time +{extension.added_seconds:.0f}s would give {run_dir} a budget of "
                f"{seconds:.0f} s; train.max_time is at most {MAX_TIME_SECONDS:.0f} s (30 days)",
                hint="add less time",
            )
        extended.train.max_time = seconds
    reason = progress.stopped
    finished = reason in FINISHED
    if extended == config:
        if finished:
            raise UsageError(
                f"{run_dir} is finished: {FINISHED[reason]}",
                hint=f"extend it: --time +5m, or --set train.epochs=N (N > {progress.epoch})",
            )
        return config, False
    if (
        extended.train.max_time != config.train.max_time
        and extended.train.epochs == config.train.epochs
        and progress.epoch >= config.train.epochs
    ):
        extended.train.epochs = NO_EPOCH_LIMIT  # more time after all its epochs: time decides
    if extended.train.epochs <= progress.epoch:
        raise UsageError(
            f"--set train.epochs={extended.train.epochs} is no extension: "
            f"{run_dir} has run {progress.epoch} epoch(s)",
            hint=f"give more, e.g. --set train.epochs={progress.epoch + config.train.epochs}",
        )
    budget = extended.train.max_time
    if budget is not None and budget <= spent:
        raise UsageError(
            f"a time budget of {budget:g} s is no extension: {run_dir} has used {spent:.0f} s",
            hint="--time +5m adds 5 minutes to what the run had",
        )
    return extended, finished


def start_segment(state: TrainingState) -> TrainingState:
    """A finished run extended: its schedule starts over from this step, and patience anew."""
    return replace(
        state,
        segment_step=state.step,
        segment_epoch=state.epoch,
        epochs_without_improvement=0,
        stopped=None,
    )


def restore(checkpoint, model, optimizer, scheduler, scaler, ema) -> TrainingState:
    """Put weights, optimiser, scheduler, scaler and RNG back as `last` saved them."""
    saved = checkpoint.training_state
    if saved is None:
        raise CheckpointError(f"{checkpoint.path} holds no training state to resume from")
    # what the saved state holds is only known to fit when torch takes it: its refusals
    # (another number of parameters, a missing key, a wrong type) all mean a damaged `last`
    try:
        if ema is not None:
            load_model_state(model, saved["raw_model"], checkpoint.path)
            load_model_state(ema.module, checkpoint.model_state, checkpoint.path)
            ema.n_averaged.fill_(saved["ema_updates"])
        else:
            load_model_state(model, checkpoint.model_state, checkpoint.path)
        optimizer.load_state_dict(saved["optimizer"])
        check_optimizer_shapes(optimizer)
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        return progress_from(saved)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise damaged_state(checkpoint.path, detail) from None


# Optimiser state kept per parameter, in the parameter's shape, by torch's optimisers; torch
# does not compare shapes on loading, so a damaged one would fail at the first step instead.
PARAMETER_SHAPED_STATE = (
    "exp_avg",
    "exp_avg_sq",
    "max_exp_avg_sq",
    "momentum_buffer",
    "square_avg",
    "grad_avg",
    "sum",
    "exp_inf",
    "acc_delta",
)


def check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """A ValueError naming the first loaded optimiser state of another shape than its
    parameter."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if (
                    name in PARAMETER_SHAPED_STATE
                    and isinstance(value, torch.Tensor)
                    and value.shape != parameter.shape
                ):
                    raise ValueError(
                        f"optimizer {name} of shape {tuple(value.shape)} for a parameter of "
                        f"shape {tuple(parameter.shape)}"
                    )


def load_weights(model: nn.Module, path: Path) -> None:
    """`model.weights`: start from a checkpoint or weights file."""
    from segcli.weights import load_weights_into

    load_weights_into(model, path)
