"""Options several commands share, declared once so they read and behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint, run folder, or exported model (.onnx, .pt) "
        "[default: newest run's best].",
    ),
]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where to look for the newest run.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Tile = Annotated[
    int | None,
    typer.Option(
        "--tile", help="Sliding-window inference with SIZE-pixel windows at the image's own size."
    ),
]
Overlap = Annotated[
    float,
    typer.Option("--overlap", help="Fraction of each --tile window shared with its neighbours."),
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
