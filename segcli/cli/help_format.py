"""Help in the conventions every command line shares, whichever Typer version draws it.

Recent Typer versions show a value's Python type as its placeholder (`--set <list[str]>`,
`segcli list {kind}`) and cut command summaries at the terminal's width. Commands and groups
made through `Typer` here name values after their option or argument, as argparse does
(`--out OUT`, `segcli list KIND`, `INPUTS...`), unless a declaration gives its own metavar,
and list sub-commands with their whole first sentence, wrapped rather than cut.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def _name_values(params: list[Any]) -> None:
    """`--runs-dir RUNS_DIR`, `KIND`: named as typed on the command line, not as the Python
    parameter behind it is."""
    for param in params:
        if param.metavar is not None:
            continue
        flags = [opt for opt in param.opts if opt.startswith("--")]
        name = max(flags, key=len).lstrip("-") if flags else param.name
        param.metavar = name.replace("-", "_").upper()


def _argument_name(param: Any) -> str:
    return param.metavar + ("..." if param.nargs != 1 else "")


class Command(TyperCommand):
    """A command whose usage reads `segcli evaluate [OPTIONS] DATASET_DIR`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Group(TyperGroup):
    """A group listing each sub-command with its whole summary sentence."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Typer(typer.Typer):
    """`typer.Typer` whose commands are `Command`s and whose own group is a `Group`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
