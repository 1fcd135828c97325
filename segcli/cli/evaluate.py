"""`segcli evaluate`: scores of a checkpoint on a prepared split, per class, saved as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli import options
from segcli.cli.output import console, error_console


def evaluate(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset folder (with dataset.json)."),
    split: str = typer.Option("val", "--split", help="Labelled split to evaluate: val, test, ..."),
    checkpoint: options.Checkpoint = None,
    out: Path = typer.Option(
        None, "--out", "-o", help="JSON report [default: <run>/eval-<split>.json]."
    ),
    save_predictions: bool = typer.Option(
        False,
        "--save-predictions",
        help="Also write each predicted mask (and colour) next to the report.",
    ),
    post_processing: bool = typer.Option(
        True,
        "--post-processing/--no-post-processing",
        help="Two-class models: apply the post-processing training chose on the validation "
        "images (threshold, smallest region, empty images), recorded in the checkpoint.",
    ),
    tile: options.Tile = None,
    overlap: options.Overlap = None,
    tta: options.Tta = "none",
    workers: options.Workers = None,
    device: options.Device = "auto",
    runs_dir: options.RunsDir = Path("runs"),
    force: options.Force = False,
    max_image_pixels: options.MaxImagePixels = None,
) -> None:
    """Score the model's masks against a split's masks, at the images' own sizes.

    Existing files are replaced only where segcli wrote them (or with --force)."""
    from rich.progress import Progress
    from rich.table import Table

    from segcli.evaluation import labelled_pairs
    from segcli.evaluation.json_report import (
        claim_outputs,
        default_report_path,
        evaluation_report,
        write_json_atomic,
    )
    from segcli.inference.predictor import Predictor, reuse_freed_memory
    from segcli.runs.folders import find_checkpoint

    checkpoint_path = find_checkpoint(checkpoint, runs_dir)
    reuse_freed_memory()
    pairs = labelled_pairs(dataset_dir, split)
    total = len(pairs)
    report_path = out or default_report_path(checkpoint_path, split)
    predictions_dir = (
        report_path.with_name(f"{report_path.stem}-predictions") if save_predictions else None
    )
    ledger = claim_outputs(report_path, predictions_dir, dataset_dir, checkpoint_path, pairs, force)
    predictor = Predictor(checkpoint_path, device, tta=tta, post_processing=post_processing)
    console.print(f"checkpoint: {checkpoint_path}")
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task(f"evaluating {split}", total=total)
        report = evaluation_report(
            predictor,
            dataset_dir,
            split,
            tile=tile,
            overlap=overlap,
            workers=workers,
            predictions_dir=predictions_dir,
            max_pixels=max_image_pixels,
            ledger=ledger,
            progress=lambda count: progress.advance(task, count),
        )
    report["checkpoint"] = str(checkpoint_path)
    write_json_atomic(report_path, report, ledger)

    names = [c["name"] for c in report["classes"]]
    per_class = {
        key: value
        for key, value in report["metrics"].items()
        if isinstance(value, list) and len(value) == len(names) and not isinstance(value[0], list)
    }
    table = Table(title=f"{dataset_dir.name} / {split}: {total} image(s)")
    table.add_column("class")
    for key in per_class:
        table.add_column(key, justify="right")
    for index, name in enumerate(names):
        table.add_row(name, *(_number(values[index]) for values in per_class.values()))
    console.print(table)
    for key, value in report["metrics"].items():
        if isinstance(value, float):
            console.print(f"{key}: [bold]{_number(value)}[/]")
    console.print(
        f"wrote {report_path}" + (f" and masks in {predictions_dir}" if predictions_dir else "")
    )


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN: class absent from truth and prediction


def add_to(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
