"""What a run saves to continue or to be used: the best-checkpoint rule, the training state
in `last`, and resuming from it. (The file format itself is `segcli.engine.checkpoint`.)"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from segcli.config import RunConfig, build_config
from segcli.data.format import DatasetInfo
from segcli.engine.build import model_record
from segcli.engine.checkpoint import SUFFIX, load_checkpoint, load_model_state
from segcli.engine.loop import TrainingState
from segcli.engine.preprocess import preprocessing_record
from segcli.engine.runs import environment
from segcli.errors import CheckpointError


class BestTracker:
    """The one rule for `best`: a number strictly better than every earlier one in `mode`.

    A missing value, a non-number or NaN is never an improvement. The tracker lives in the
    `TrainingState`, so a resumed run keeps comparing with the best before the interruption.
    """

    def __init__(self, monitor: str, mode: Literal["max", "min"], state: TrainingState) -> None:
        self.monitor = monitor
        self.mode = mode
        self.state = state

    def improves(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
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
    return (
        build_config(config_file=run_dir / "config.toml"),
        load_checkpoint(last, with_training_state=True),
    )


def restore(checkpoint, model, optimizer, scheduler, scaler, ema) -> TrainingState:
    """Put weights, optimiser, scheduler, scaler and RNG back as `last` saved them."""
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


def load_weights(model: nn.Module, path: Path) -> None:
    """`model.weights`: start from a checkpoint or weights file."""
    from segcli.weights import load_weights_into

    load_weights_into(model, path)
