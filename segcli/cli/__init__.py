"""The `segcli` command line: one module per command, errors rendered once, here.

Nothing in this package imports torch at module level; commands import the engine
inside their functions, so `segcli --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer

from segcli import __version__
from segcli.cli import evaluate as evaluate_command
from segcli.cli import export as export_command
from segcli.cli import help_format
from segcli.cli import plugins as plugins_command
from segcli.cli import predict as predict_command
from segcli.cli import prepare as prepare_command
from segcli.cli import report as report_command
from segcli.cli import train as train_command
from segcli.cli import visualize as visualize_command
from segcli.cli.output import print_error, show_logged_warnings
from segcli.errors import Interrupted, SegcliError

# Typer's shell completion runs the command line with this set (`_<PROG>_COMPLETE`)
COMPLETE_VARIABLE = "_SEGCLI_COMPLETE"

app = help_format.Typer(
    name="segcli",
    help="Semantic segmentation from a folder of images to a trained model and coloured "
    "predictions. Datasets, models, losses, metrics, optimizers, schedulers, transforms "
    "and recipes come from plugins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no rich import before a command runs (start-up < 0.3 s)
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
visualize_command.add_to(app)
report_command.add_to(app)
plugins_command.add_to(app)


def main() -> None:
    """Console entry point: run the app and turn expected errors into one red line."""
    from segcli.plugins import get_plugins

    debug = "--debug" in sys.argv or bool(os.environ.get("SEGCLI_DEBUG"))
    if debug:
        os.environ["SEGCLI_DEBUG"] = "1"  # plugin loading prints the tracebacks it catches
    if os.environ.get(COMPLETE_VARIABLE):
        # the shell is completing a word: a warning would land in the middle of the prompt
        logging.getLogger("segcli").addHandler(logging.NullHandler())
    else:
        show_logged_warnings()
    try:
        get_plugins().add_commands(app)
        app(prog_name="segcli")  # also under `python -m segcli`: completion is keyed on it
    except SegcliError as error:
        if debug:
            traceback.print_exc()
        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exit_:
        if _caused_by_ctrl_c(exit_):
            _interrupted()
        raise


def _interrupted() -> None:
    print_error(Interrupted("interrupted; finished files were kept, none was left half-written"))
    sys.exit(Interrupted.exit_code)


def _caused_by_ctrl_c(exit_: SystemExit) -> bool:
    """Typer turns a Ctrl-C that no command handled into a silent exit; its cause tells."""
    error: BaseException | None = exit_
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False
