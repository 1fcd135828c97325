"""Options several commands share, declared once so they read and behave the same, and the
range checks of numeric options: made while the command line is parsed, before any work."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from segcli.cli import completion
from segcli.errors import UsageError

Number = TypeVar("Number", int, float)


def in_range(
    option: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str | None = None,
) -> Callable[[Number | None], Number | None]:
    """A Typer callback refusing a value of `option` outside [low, high] (an end excluded when
    open), NaN or infinite, with a UsageError (exit 2); an option left out passes."""

    def check(value: Number | None) -> Number | None:
        if value is None:
            return value
        inside = math.isfinite(value)
        if inside and low is not None:
            inside = value > low if low_open else value >= low
        if inside and high is not None:
            inside = value < high if high_open else value <= high
        if not inside:
            finite = "" if math.isfinite(value) else "finite and "
            raise UsageError(
                f"{option} {value:g} is out of range: it must be {finite}"
                + range_text(low, high, low_open, high_open),
                hint=hint,
            )
        return value

    return check


def range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """`at least 8`, `above 0 and at most 1`, a finite number: how a range reads in a message."""
    parts = []
    if low is not None:
        parts.append(f"{'above' if low_open else 'at least'} {low:g}")
    if high is not None:
        parts.append(f"{'below' if high_open else 'at most'} {high:g}")
    return " and ".join(parts) or "a finite number"


def onnx_opset(value: int | None) -> int | None:
    """`--opset`: one the installed exporter writes. Below the opset its operators are
    implemented in, torch.onnx only tries a version conversion and, when that fails, writes
    its own opset anyway (after a traceback), so those are refused as well."""
    if value is None:
        return value
    lowest, highest = supported_onnx_opsets()
    import torch

    return in_range(
        "--opset",
        low=lowest,
        high=highest,
        hint=f"the opsets torch {torch.__version__} exports; leave --opset out for its default",
    )(value)


def supported_onnx_opsets() -> tuple[int, int]:
    """(lowest, highest) ONNX opset the installed torch.onnx exporter (dynamo) writes."""
    from torch.onnx import _constants
    from torch.onnx._internal.exporter import _constants as exporter_constants

    return exporter_constants.TORCHLIB_OPSET, _constants.ONNX_MAX_OPSET


MIN_TILE = 8  # smaller windows see too little context to be of use (and are mostly padding)

Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint, run folder, or exported model (.onnx, .pt, OpenVINO .xml) "
        "[default: newest run's best].",
        autocompletion=completion.checkpoints,
    ),
]
Ensemble = Annotated[
    Path | None,
    typer.Option(
        "--ensemble",
        metavar="RUN",
        help="A cross-validation run (train --folds): its folds' probabilities averaged, "
        "instead of one --checkpoint.",
        autocompletion=completion.checkpoints,
    ),
]


def model_path(checkpoint: Path | None, ensemble: Path | None, runs_dir: Path) -> Path:
    """What the Predictor loads: the `--ensemble` run, checked to have every fold trained,
    or the `--checkpoint` (a file, a run folder, or the newest run's best)."""
    from segcli.runs.cross_validation import fold_checkpoints
    from segcli.runs.folders import find_checkpoint

    if ensemble is None:
        return find_checkpoint(checkpoint, runs_dir)
    if checkpoint is not None:
        raise UsageError("--ensemble and --checkpoint both name the model", hint="give one of them")
    fold_checkpoints(ensemble)
    return ensemble


RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where to look for the newest run.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Tile = Annotated[
    int | None,
    typer.Option(
        "--tile",
        metavar="SIZE",
        help="Sliding-window inference with SIZE-pixel windows (at least 8) at the image's "
        "own size.",
        callback=in_range(
            "--tile",
            low=MIN_TILE,
            hint="typically 256-1024; leave --tile out to predict whole images",
        ),
    ),
]
Overlap = Annotated[
    float | None,
    typer.Option(
        "--overlap",
        metavar="FRACTION",
        help="With --tile: fraction of each window shared with its neighbours, 0 to below 1 "
        "[default: 0.25].",
        callback=in_range("--overlap", low=0, high=1, high_open=True, hint="typically 0.25-0.5"),
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace existing output files even if segcli did not write them (never inputs).",
    ),
]
MaxImagePixels = Annotated[
    int | None,
    typer.Option(
        "--max-image-pixels",
        metavar="PIXELS",
        help="Refuse images with more pixels than this, before decoding them "
        "[default: $SEGCLI_MAX_IMAGE_PIXELS or 150000000].",
        callback=in_range("--max-image-pixels", low=1),
    ),
]
Tta = Annotated[
    str,
    typer.Option(
        "--tta",
        help="Test-time augmentation: auto (the flips training found to help on its validation "
        "images, recorded in the checkpoint; none with --no-post-processing), none, flip "
        "(horizontal) or flip-hv.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Background processes loading images [default: 2 on CUDA, 0 on CPU, where "
        "they would compete with the model's threads].",
        callback=in_range("--workers", low=0, hint="0 loads images in the main process"),
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        help="Images (or --tile windows) per forward pass.",
        callback=in_range("--batch-size", low=1),
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads of the model, in every format (PyTorch, TorchScript, ONNX Runtime, "
        "OpenVINO) [default: PyTorch's, the physical cores or OMP_NUM_THREADS].",
        callback=in_range("--threads", low=1),
    ),
]


def use_threads(threads: int | None) -> None:
    """`--threads N`: PyTorch's CPU threads, which the runtimes of exported models take too
    (`segcli.inference.exported_models.runtime_threads`); left out, PyTorch's default."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
