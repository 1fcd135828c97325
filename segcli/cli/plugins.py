"""`segcli plugins` and `segcli list KIND`: what is installed and what it registered."""

from __future__ import annotations

import json

import typer

from segcli.cli import completion
from segcli.cli.output import console
from segcli.errors import UsageError
from segcli.plugins import KINDS
from segcli.registry import plural

_KIND_ALIASES = {name: kind for kind in KINDS for name in (kind, plural(kind))}


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List installed plugins: distribution, version, status and what each registered.

    A plugin that failed (to import, in a hook, or by adding a command that shadows another)
    shows why; one that takes over a second to load is marked slow."""
    from segcli.plugins import get_plugins

    statuses = get_plugins().statuses
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="segcli plugins")
    for column in ("plugin", "distribution", "version", "status", "registered"):
        table.add_column(column)
    for status in statuses:
        registered = "\n".join(
            f"{len(names)} {plural(kind) if len(names) > 1 else kind}: {', '.join(names)}"
            for kind, names in status.registered.items()
        )
        state = {"ok": "[green]ok[/]", "disabled": "[dim]disabled[/]"}.get(
            status.status, f"[red]failed[/]: {escape(status.error or '')}"
        )
        if status.slow:  # every command that loads plugins waits for it
            state += f" [yellow](slow: {status.load_seconds:.1f} s to load)[/]"
        table.add_row(
            status.name,
            status.distribution or "?",
            status.version or "?",
            state,
            escape(registered) or "-",
        )
    console.print(table)


def list_names(
    kind: str = typer.Argument(
        ...,
        help="datasets, models, losses, metrics, optimizers, schedulers, transforms or recipes",
        autocompletion=completion.kinds,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the names of one kind, with descriptions and the plugin that registered each."""
    from segcli.plugins import get_plugins

    key = _KIND_ALIASES.get(kind.lower())
    if key is None:
        raise UsageError(
            f"unknown kind {kind!r}; valid kinds: {', '.join(plural(k) for k in KINDS)}"
        )
    registry = get_plugins().registries[key]
    if as_json:
        rows = [
            {
                "name": e.name,
                "description": e.description,
                "plugin": e.origin.plugin,
                "distribution": e.origin.distribution,
            }
            for e in registry
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"segcli {plural(key)}")
    for column in ("name", "description", "plugin"):
        table.add_column(column)
    for entry in registry:
        table.add_row(entry.name, entry.description, str(entry.origin))
    console.print(table)


def add_to(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("list")(list_names)
