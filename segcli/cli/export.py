"""`segcli export` (being written)."""

import typer


def add_to(app: typer.Typer) -> None:
    pass
