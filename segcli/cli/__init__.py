"""The `segcli` command line: one module per command, errors rendered once, here.

Nothing in this package imports torch at module level; commands import the engine
inside their functions, so `segcli --help` stays fast. This module itself imports only the
standard library and `segcli.errors`: `main` imports the app inside its error handling, so
even a Ctrl-C or a failure while the command line is still importing ends in one line.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
import traceback
from typing import Any

from segcli.errors import ResourceError, SegcliError

# Typer's shell completion runs the command line with this set (`_<PROG>_COMPLETE`)
COMPLETE_VARIABLE = "_SEGCLI_COMPLETE"
# what a Unix tool killed by SIGPIPE exits with, as `yes | head -1` shows
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE
_DISK_FULL_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# when `main` began (time.monotonic), None when the app is called another way (tests): a
# `--time` budget is the whole command's
_started: float | None = None


def command_started() -> float | None:
    """When the running `segcli` command began (`time.monotonic`), or None if unknown."""
    return _started


def __getattr__(name: str) -> Any:
    """`segcli.cli.app`, imported on first use (see the module's docstring)."""
    if name == "app":
        from segcli.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console entry point: run the app; every way it can end is an exit code and at most
    one line on stderr, from the first import to the last byte flushed to stdout."""
    global _started
    _started = time.monotonic()
    debug = "--debug" in sys.argv or bool(os.environ.get("SEGCLI_DEBUG"))
    try:
        try:
            _run(debug)
        finally:
            # stdout is flushed here rather than at interpreter exit, where a failure could
            # only be printed as "Exception ignored" and end in exit code 120
            sys.stdout.flush()
    except KeyboardInterrupt:
        _interrupted()
    except SegcliError as error:
        _render(error, debug)
    except SystemExit as exit_:
        if _caused_by_ctrl_c(exit_):
            _interrupted()
        if isinstance(exit_.__context__, BrokenPipeError):  # click's own exit 1 for EPIPE
            _broken_pipe()
        raise
    except BrokenPipeError:
        _broken_pipe()
    except OSError as error:
        if error.errno not in _DISK_FULL_ERRORS:
            raise
        _discard_stdout()
        _render(
            ResourceError(
                f"disk full writing the standard output: {error.strerror or error}",
                hint="free space where the output goes, or send it to another disk",
            ),
            debug,
        )


def _run(debug: bool) -> None:
    if debug:
        os.environ["SEGCLI_DEBUG"] = "1"  # plugin loading prints the tracebacks it catches
    from segcli.cli.output import show_logged_warnings
    from segcli.cli.root import app

    if os.environ.get(COMPLETE_VARIABLE):
        # the shell is completing a word: a warning would land in the middle of the prompt
        logging.getLogger("segcli").addHandler(logging.NullHandler())
    else:
        show_logged_warnings()
    app(prog_name="segcli")  # also under `python -m segcli`: completion is keyed on it


def _render(error: SegcliError, debug: bool) -> None:
    """Print a `SegcliError` as its one line (after the traceback with --debug) and exit."""
    from segcli.cli.output import print_error

    if debug:
        traceback.print_exc()
    print_error(error)
    sys.exit(error.exit_code)


def _broken_pipe() -> None:
    """The reader went away (`segcli list models | head -1`): end quietly, with the code of
    a Unix tool killed by SIGPIPE, and keep the interpreter from flushing into the pipe."""
    _discard_stdout()
    sys.exit(BROKEN_PIPE_EXIT)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered goes nowhere at exit."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _interrupted() -> None:
    from segcli.cli.output import print_error
    from segcli.errors import Interrupted

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
