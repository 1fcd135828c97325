"""One exception type per kind of failure; the CLI renders each once, as one line.

Every error carries an exit code so scripts can tell the failures apart. The
codes are part of the public interface (see docs/errors.md).
"""

from __future__ import annotations


class SegcliError(Exception):
    """Base class: an expected failure with a one-line message for the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = _own_line(message)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def _own_line(message: str) -> str:
    """A DataLoader worker re-raises an error as `type(error)(its whole traceback)`; the
    user's one line is the traceback's last one, after the exception's name."""
    if message.startswith("Caught ") and "\nOriginal Traceback" in message:
        last = message.rstrip().splitlines()[-1]
        return last.partition(": ")[2] or last
    return message


class UsageError(SegcliError):
    """The command line or configuration is wrong: unknown key, wrong type, bad option."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A dataset, model, loss, metric or recipe name that no plugin registered."""


class ConfigError(UsageError):
    """A configuration value is missing, unknown or of the wrong type."""


class DataError(SegcliError):
    """Input data is missing, empty, corrupt or inconsistent (bad mask values, size mismatch)."""

    exit_code = 3


class PluginError(SegcliError):
    """A plugin failed to load, registered a clashing name or broke its contract."""

    exit_code = 4


class CheckpointError(SegcliError):
    """A checkpoint is missing, corrupt or does not fit the model it is loaded into."""

    exit_code = 5


class OutputError(SegcliError):
    """An output location cannot be written, or exists and --force was not given."""

    exit_code = 6


class ResourceError(SegcliError):
    """The machine ran out of something: memory (CPU or GPU), disk."""

    exit_code = 7


class PartialFailure(SegcliError):
    """The command finished, but some inputs were skipped (each was reported)."""

    exit_code = 8


class DivergedError(SegcliError):
    """Training diverged: the loss or the weights became NaN or infinite. Nothing non-finite
    is saved; a code of its own, so that a sweep can retry with a lower learning rate."""

    exit_code = 9


class Interrupted(SegcliError):
    """The user pressed Ctrl-C; the message says what was kept and how to go on."""

    exit_code = 130


class WeightsUnavailable(CheckpointError):
    """Published pretrained weights are not in the local cache and cannot be downloaded; the
    message names the file, the folder to put it in and the address to fetch it from."""


def shortened(items: list[str], shown: int = 3) -> str:
    """The first few of `items` for a one-line message, then "and N more"."""
    text = ", ".join(items[:shown])
    return f"{text} and {len(items) - shown} more" if len(items) > shown else text
