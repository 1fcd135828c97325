"""`segcli predict`: masks (and colour pictures) for images, files or folders."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli.output import console, error_console, print_warning


def predict(
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Checkpoint file or run folder [default: newest run's best]."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder [default: <input>-pred next to the input]."),
    colorize: bool = typer.Option(False, "--colorize", help="Also write <name>.color.png with the class palette."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include images in subfolders (the tree is mirrored)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where to look for the newest run."),
) -> None:
    """Predict a mask for every image, at the image's own size."""
    from rich.progress import Progress

    from segcli.engine.predict import discover_inputs, predict_paths
    from segcli.engine.runs import find_checkpoint
    from segcli.errors import PartialFailure

    checkpoint_path = find_checkpoint(checkpoint, runs_dir)
    total = len(discover_inputs(inputs, recursive))
    console.print(f"checkpoint: {checkpoint_path}")
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("predicting", total=total)
        report = predict_paths(
            checkpoint_path, inputs, out, colorize_masks=colorize, recursive=recursive,
            batch_size=batch_size, device=device,
            progress=lambda count: progress.advance(task, count),
        )
    console.print(f"wrote {len(report.written)} mask(s){' and colour images' if colorize else ''} to [bold]{report.out_dir}[/]")
    for path, reason in report.failed:
        print_warning(f"skipped {path}: {reason}")
    if report.failed:
        raise PartialFailure(f"{len(report.failed)} of {total} image(s) could not be read and were skipped")


def add_to(app: typer.Typer) -> None:
    app.command("predict")(predict)
