"""`segcli visualize ...`: pictures of datasets, predictions and runs, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli.output import console

visualize_app = typer.Typer(help="Write pictures (PNG) of datasets, predictions and training runs.", no_args_is_help=True)


@visualize_app.command("samples")
def samples(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset folder (with dataset.json)."),
    split: str = typer.Option(None, "--split", help="Split to sample [default: the first labelled one]."),
    count: int = typer.Option(8, "--count", "-n", help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Which random samples."),
    out: Path = typer.Option(None, "--out", "-o", help="PNG file [default: <dataset_dir>/samples.png]."),
) -> None:
    """A grid of images with their colour masks and a class legend."""
    from segcli.visualize import sample_grid, save_picture

    path = save_picture(sample_grid(dataset_dir, split, count, seed), out or dataset_dir / "samples.png")
    console.print(f"wrote {path}")


def add_to(app: typer.Typer) -> None:
    app.add_typer(visualize_app, name="visualize")
