"""The `segcli` app: its own options, the built-in commands, and plugin commands on demand.

Plugins are loaded only when the command line needs them: a command name that is not
built-in, or the list of commands (`segcli --help`, shell completion). `segcli --version`
and a built-in command's `--help` load none, so no plugin can slow them down or break them.
"""

from __future__ import annotations

from typing import Any

import typer

from segcli import __version__
from segcli.cli import evaluate as evaluate_command
from segcli.cli import export as export_command
from segcli.cli import help_format
from segcli.cli import plugins as plugins_command
from segcli.cli import predict as predict_command
from segcli.cli import prepare as prepare_command
from segcli.cli import profile as profile_command
from segcli.cli import report as report_command
from segcli.cli import train as train_command
from segcli.cli import visualize as visualize_command
from segcli.cli import weights as weights_command
from segcli.plugins import CommandHost, command_names, host_commands


class RootGroup(help_format.Group):
    """The top-level group: built-in commands at once, plugin commands when first needed.

    Plugin commands join this click group, built afresh by each `app()` call, never the
    Typer app itself: running `main` again in one process adds nothing twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_commands_added = False

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is None and not self.plugin_commands_added:
            self._add_plugin_commands()
            command = super().get_command(ctx, name)
        return command

    def list_commands(self, ctx: Any) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def _add_plugin_commands(self) -> None:
        if self.plugin_commands_added:
            return
        self.plugin_commands_added = True
        from segcli.plugins import get_plugins

        with_plugins = help_format.Typer()
        get_plugins().add_commands(with_plugins)
        if with_plugins.registered_commands or with_plugins.registered_groups:
            # the plugin manager refused any command shadowing a built-in one
            for name, command in typer.main.get_group(with_plugins).commands.items():
                self.commands.setdefault(name, command)


app = help_format.Typer(
    name="segcli",
    help="Semantic segmentation from a folder of images to a trained model and coloured "
    "predictions. Datasets, models, losses, metrics, optimizers, schedulers, transforms "
    "and recipes come from plugins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no rich import before a command runs (start-up < 0.3 s)
    cls=RootGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Options here are read by `main` before any command runs; declared for `--help`."""


prepare_command.add_to(app)
train_command.add_to(app)
predict_command.add_to(app)
evaluate_command.add_to(app)
export_command.add_to(app)
profile_command.add_to(app)
visualize_command.add_to(app)
report_command.add_to(app)
plugins_command.add_to(app)
weights_command.add_to(app)

# taken before any plugin command joins: the names no plugin command may shadow
BUILT_IN_COMMANDS = frozenset(command_names(app))
# the plugin manager sits below the command line: it is handed what plugin commands need
host_commands(CommandHost(help_format.Typer, BUILT_IN_COMMANDS))
