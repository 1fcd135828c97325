"""`segcli report`: one self-contained HTML page showing a run, or several side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli import options
from segcli.cli.output import console


def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders."),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="HTML file [default: RUN/report.html; with several runs "
        "FIRST_RUN/report-compare.html].",
    ),
    worst: int = typer.Option(
        6, "--worst", min=0, help="Validation images with the lowest IoU to show per run."
    ),
    max_images: int = typer.Option(
        200,
        "--max-images",
        min=0,
        help="Evaluate at most this many validation images (evenly spaced) to find the worst; "
        "0 for all.",
    ),
    device: options.Device = "cpu",
    force: options.Force = False,
) -> None:
    """Write one HTML page showing a run, or several runs side by side.

    The page holds the curves, the per-class scores of the best checkpoint, the confusion
    matrix, the worst validation predictions, the configuration, plan, timings and
    environment. Several runs are compared first: curves overlaid, best scores and the
    configuration keys that differ. Nothing in the page loads from the network."""
    from segcli.report import write_report

    path = write_report(
        run_dirs,
        out,
        force=force,
        worst=worst,
        max_images=max_images,
        device=device,
    )
    console.print(f"wrote {path}")


def write_after_training(run_dir: Path) -> None:
    """The report of a finished run, evaluated on the run's own device. Its failure is the
    command's (same kind of error, said to be the report's): the checkpoints stay."""
    from segcli.errors import SegcliError
    from segcli.report import write_report

    try:
        path = write_report([run_dir], device=None)
    except SegcliError as error:
        raise type(error)(
            f"training finished (checkpoints in {run_dir}) but its report was not written: "
            f"{error.message}",
            hint=error.hint or f"fix that, then `segcli report {run_dir}`",
        ) from error
    console.print(f"report: {path}")


def add_to(app: typer.Typer) -> None:
    app.command("report")(report)
