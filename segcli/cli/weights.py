"""`segcli weights fetch|list`: the published weights model plugins know, in torch hub's cache.

The work is `segcli.weights`' (the names, the cache, the download and its SHA-256 check);
this module parses and prints."""

from __future__ import annotations

import json

import typer

from segcli.cli import help_format
from segcli.cli.output import console

weights_app = help_format.Typer(
    help="Download published pretrained weights ahead of training, and list them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@weights_app.command("fetch")
def fetch(
    name: str = typer.Argument(
        ..., help="resnet18, resnet34, or MODEL:NAME (deeplabv3-resnet50:coco); see `list`."
    ),
) -> None:
    """Download published weights into torch hub's cache (SHA-256 checked) and print where
    they are; a file already there is kept as it is. Training then uses them offline."""
    from segcli.weights import find_published

    published = find_published(name)
    was_cached = published.cached
    weights = published.fetch()
    size = weights.path.stat().st_size
    done = "already in the cache" if was_cached else "downloaded"
    # plain text: a path a script reads back is never wrapped
    typer.echo(f"{published.model}:{published.name} {done}: {weights.path} ({_megabytes(size)})")


@weights_app.command("list")
def list_weights(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the published weights of the loaded model plugins: which are in the cache,
    their file and size."""
    from rich.markup import escape
    from rich.table import Table

    from segcli.weights import published_weights, weights_cache_dir

    if as_json:
        rows = [
            {
                "name": f"{published.model}:{published.name}",
                "url": published.url,
                "path": str(published.path),
                "bytes": published.path.stat().st_size if published.cached else None,
            }
            for published in published_weights()
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"published weights (cache: {weights_cache_dir()})")
    for column in ("name", "cached", "file", "size"):
        table.add_column(column, overflow="fold")
    for published in published_weights():
        cached = published.cached
        table.add_row(
            f"{published.model}:{published.name}",
            "yes" if cached else "no",
            escape(published.path.name),
            _megabytes(published.path.stat().st_size) if cached else "-",
        )
    console.print(table)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def add_to(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
