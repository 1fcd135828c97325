"""Options several commands share, declared once so they read and behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segcli.cli import completion

Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint, run folder, or exported model (.onnx, .pt) [default: newest run's best].",
        autocompletion=completion.checkpoints,
    ),
]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where to look for the newest run.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Tile = Annotated[
    int | None,
    typer.Option(
        "--tile",
        metavar="SIZE",
        help="Sliding-window inference with SIZE-pixel windows (at least 8) at the image's "
        "own size.",
    ),
]
Overlap = Annotated[
    float | None,
    typer.Option(
        "--overlap",
        metavar="FRACTION",
        help="With --tile: fraction of each window shared with its neighbours, 0 to below 1 "
        "[default: 0.25].",
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
    ),
]
Tta = Annotated[
    str, typer.Option("--tta", help="Test-time augmentation: none, flip (horizontal) or flip-hv.")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Background processes loading images [default: 2 on CUDA, 0 on CPU, where "
        "they would compete with the model's threads].",
    ),
]
