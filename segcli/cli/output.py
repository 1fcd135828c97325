"""Shared console output: the one-line error format and rich consoles."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape

from segcli.errors import SegcliError

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(error: SegcliError) -> None:
    error_console.print(f"[bold red]error:[/] {escape(str(error))}")


def print_warning(message: str) -> None:
    error_console.print(f"[yellow]warning:[/] {escape(message)}")


class WarningHandler(logging.Handler):
    """Shows warnings logged by segcli and its plugins (logger "segcli") as "warning: ..."."""

    def emit(self, record: logging.LogRecord) -> None:
        print_warning(record.getMessage())


def show_logged_warnings() -> None:
    logger = logging.getLogger("segcli")
    if not any(isinstance(handler, WarningHandler) for handler in logger.handlers):
        logger.addHandler(WarningHandler(logging.WARNING))
