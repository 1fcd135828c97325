"""`segcli visualize ...`: pictures of datasets, predictions and runs, written as PNG files.

Each command checks its output with `claim_outputs` before drawing: a file segcli did not
write there is replaced only with --force, and a file the command reads never is."""

from __future__ import annotations

import itertools
from pathlib import Path

import typer

from segcli.cli import help_format, options
from segcli.cli.output import console

visualize_app = help_format.Typer(
    help="Write pictures (PNG) of datasets, predictions and training runs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@visualize_app.command("samples")
def samples(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset folder (with dataset.json)."),
    split: str = typer.Option(
        None, "--split", help="Split to sample [default: the first labelled one]."
    ),
    count: int = typer.Option(
        8, "--count", "-n", help="Number of samples.", callback=options.in_range("--count", low=1)
    ),
    seed: int = typer.Option(0, "--seed", help="Which random samples."),
    out: Path = typer.Option(
        None, "--out", "-o", help="PNG file [default: <dataset_dir>/samples.png]."
    ),
    force: options.Force = False,
) -> None:
    """A grid of images with their colour masks and a class legend."""
    from segcli.ledger import claim_outputs, dataset_files
    from segcli.visualize import sample_grid, save_picture

    path = out or dataset_dir / "samples.png"
    ledger = claim_outputs([path], inputs=dataset_files(dataset_dir), force=force)
    save_picture(sample_grid(dataset_dir, split, count, seed), path, ledger)
    console.print(f"wrote {path}")


@visualize_app.command("predictions")
def predictions(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset folder (with dataset.json)."),
    checkpoint: options.Checkpoint = None,
    split: str = typer.Option("val", "--split", help="Labelled split to show."),
    count: int = typer.Option(
        6,
        "--count",
        "-n",
        help="Number of samples (rows).",
        callback=options.in_range("--count", low=1),
    ),
    worst_first: bool = typer.Option(
        False, "--worst-first", help="The samples with the lowest per-image mean IoU, worst on top."
    ),
    seed: int = typer.Option(0, "--seed", help="Which random samples (without --worst-first)."),
    device: options.Device = "auto",
    out: Path = typer.Option(
        None, "--out", "-o", help="PNG file [default: <run>/predictions-<split>.png]."
    ),
    runs_dir: options.RunsDir = Path("runs"),
    force: options.Force = False,
) -> None:
    """Rows of image / truth / prediction / error map, each labelled with its mean IoU."""
    from segcli.inference.predictor import Predictor
    from segcli.ledger import claim_outputs, dataset_files
    from segcli.runs.folders import find_checkpoint
    from segcli.visualize import prediction_rows, save_picture

    checkpoint_path = find_checkpoint(checkpoint, runs_dir)
    path = out or checkpoint_path.parent / f"predictions-{split}.png"
    inputs = itertools.chain([checkpoint_path], dataset_files(dataset_dir))
    ledger = claim_outputs([path], inputs=inputs, force=force)
    picture = prediction_rows(
        dataset_dir,
        Predictor(checkpoint_path, device),
        split,
        count,
        worst_first=worst_first,
        seed=seed,
    )
    save_picture(picture, path, ledger)
    console.print(f"wrote {path}")


@visualize_app.command("curves")
def curves(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders (overlaid)."),
    keys: list[str] = typer.Option(
        None, "--key", "-k", help="Quantity to plot, e.g. val/loss (repeatable) [default: all]."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="PNG file [default: <first run>/curves.png]."
    ),
    force: options.Force = False,
) -> None:
    """Loss and metrics per epoch, one panel each, several runs overlaid."""
    from segcli.ledger import claim_outputs, run_records
    from segcli.visualize import curves as draw_curves
    from segcli.visualize import save_picture

    path = out or run_dirs[0] / "curves.png"
    inputs = itertools.chain.from_iterable(run_records(run) for run in run_dirs)
    ledger = claim_outputs([path], inputs=inputs, force=force)
    save_picture(draw_curves(run_dirs, keys or None), path, ledger)
    console.print(f"wrote {path}")


@visualize_app.command("confusion")
def confusion(
    source: Path = typer.Argument(
        ..., help="A run folder (best epoch) or a `segcli evaluate` JSON."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="PNG file [default: confusion.png in the run / next to the JSON]."
    ),
    force: options.Force = False,
) -> None:
    """Row-normalised confusion matrix heat map with class names."""
    from segcli.errors import DataError
    from segcli.ledger import claim_outputs, run_records
    from segcli.visualize import confusion_picture, confusion_source, save_picture

    if not source.exists():
        raise DataError(f"{source} does not exist", hint="pass a run folder or an evaluation JSON")
    if source.is_dir():
        path, inputs = out or source / "confusion.png", run_records(source)
    else:
        path, inputs = out or source.with_name(f"{source.stem}-confusion.png"), [source]
    ledger = claim_outputs([path], inputs=inputs, force=force)
    matrix, names, title = confusion_source(source)
    save_picture(confusion_picture(matrix, names, title), path, ledger)
    console.print(f"wrote {path}")


def add_to(app: typer.Typer) -> None:
    app.add_typer(visualize_app, name="visualize")
