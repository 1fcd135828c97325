"""`segcli predict`: masks (and colour pictures, overlays, probabilities) for images."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli import options
from segcli.cli.output import console, error_console, print_warning


def predict(
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    checkpoint: options.Checkpoint = None,
    ensemble: options.Ensemble = None,
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder [default: <input>-pred next to the input]."
    ),
    colorize: bool = typer.Option(
        False, "--colorize", help="Also write <name>.color.png with the class palette."
    ),
    overlay: bool = typer.Option(
        False,
        "--overlay",
        help="Also write <name>.overlay.png: image blended with the colour mask.",
    ),
    alpha: float = typer.Option(
        0.5,
        "--alpha",
        help="Opacity of the colour mask in --overlay, above 0 and at most 1.",
        callback=options.in_range("--alpha", low=0, low_open=True, high=1),
    ),
    probabilities: str = typer.Option(
        None,
        "--probabilities",
        help="npy: <name>.probs.npy, float16 (classes, H, W); png: <name>.confidence.png, "
        "probability of the predicted class x 255.",
    ),
    threshold: float = typer.Option(
        None,
        "--threshold",
        help="Binary models: foreground above this probability [default: train.threshold].",
        callback=options.in_range("--threshold", low=0, high=1, low_open=True, high_open=True),
    ),
    post_processing: bool = typer.Option(
        True,
        "--post-processing/--no-post-processing",
        help="Apply what training chose on the validation images, recorded in the "
        "checkpoint: test-time flips (--tta auto) and, for two-class models, the threshold, "
        "smallest region and empty-image rules.",
    ),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Include images in subfolders (the tree is mirrored)."
    ),
    tile: options.Tile = None,
    overlap: options.Overlap = None,
    tta: options.Tta = "auto",
    batch_size: options.BatchSize = 4,
    workers: options.Workers = None,
    device: options.Device = "auto",
    threads: options.Threads = None,
    amp: str = typer.Option(
        "auto", "--amp", help="Mixed precision: auto (fp16 on CUDA), off, bf16, fp16."
    ),
    runs_dir: options.RunsDir = Path("runs"),
    force: options.Force = False,
    max_image_pixels: options.MaxImagePixels = None,
) -> None:
    """Predict a mask for every image, at the image's own size.

    Exit code 8 ("partial") when some images could not be read: each is reported, the
    others are predicted. Existing files are replaced only where segcli wrote them (or with
    --force).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from segcli.errors import PartialFailure
    from segcli.inference.input_files import discover_inputs
    from segcli.inference.predict_files import predict_paths
    from segcli.inference.predictor import reuse_freed_memory

    checkpoint_path = options.model_path(checkpoint, ensemble, runs_dir)
    reuse_freed_memory()
    options.use_threads(threads)
    total = len(discover_inputs(inputs, recursive))
    console.print(f"{'ensemble' if ensemble else 'checkpoint'}: {checkpoint_path}")
    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=error_console, transient=True) as progress:
        task = progress.add_task("predicting", total=total)
        report = predict_paths(
            checkpoint_path,
            inputs,
            out,
            colorize_masks=colorize,
            overlay_alpha=alpha if overlay else None,
            probability_format=probabilities,
            threshold=threshold,
            post_processing=post_processing,
            recursive=recursive,
            batch_size=batch_size,
            workers=workers,
            device=device,
            amp=amp,
            tta=tta,
            tile=tile,
            overlap=overlap,
            force=force,
            max_pixels=max_image_pixels,
            progress=lambda count: progress.advance(task, count),
        )
    images = total - len(report.failed)
    console.print(
        f"predicted {images} image(s): {len(report.written)} file(s) in [bold]{report.out_dir}[/]"
    )
    for path, reason in report.failed:
        print_warning(f"skipped {path}: {reason}")
    if report.failed:
        raise PartialFailure(
            f"{len(report.failed)} of {total} image(s) could not be read and were skipped"
        )


def add_to(app: typer.Typer) -> None:
    app.command("predict")(predict)
