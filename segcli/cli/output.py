"""Shared console output: the one-line error format and rich consoles."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from segcli.errors import SegcliError

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(error: SegcliError) -> None:
    error_console.print(f"[bold red]error:[/] {escape(str(error))}")


def print_warning(message: str) -> None:
    error_console.print(f"[yellow]warning:[/] {escape(message)}")
