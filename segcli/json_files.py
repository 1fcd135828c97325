"""Reading JSON that may be hostile: depth-limited, every failure an error naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segcli.errors import DataError, SegcliError

# Deeper than any file segcli reads (dataset.json, split files, checkpoint metadata: under
# 10 levels), and far enough from Python's recursion limit that every later walk over the
# value (checks, json.dumps in a message) is safe.
MAX_JSON_DEPTH = 100


def parse_json(
    text: str | bytes,
    source: str,
    error: type[SegcliError] = DataError,
    hint: str | None = None,
) -> Any:
    """The value of JSON `text` read from `source` (a path, or what it is: "the metadata of
    CKPT"). Text that is not JSON, not UTF-8 or nested deeper than MAX_JSON_DEPTH levels is
    an `error` naming `source`, never a ValueError or RecursionError."""
    too_deep = f"{source} is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise error(f"{source} is not UTF-8 text: {exc.reason}", hint=hint) from None
    except ValueError as exc:
        raise error(f"{source} is not valid JSON: {exc}", hint=hint) from None
    except RecursionError:
        raise error(too_deep, hint=hint) from None
    if _nested_deeper(value, MAX_JSON_DEPTH):
        raise error(too_deep, hint=hint)
    return value


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest more than `limit` levels (no recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            item
            for container in level
            if isinstance(container, (list, dict))
            for item in (container.values() if isinstance(container, dict) else container)
        ]
    return any(isinstance(item, (list, dict)) for item in level)


def read_json(
    path: Path,
    what: str = "",
    error: type[SegcliError] = DataError,
    hint: str | None = None,
) -> Any:
    """The JSON value in the file `path` (`what` it is, e.g. "split file", starts the
    messages); a file that cannot be read or parsed is an `error` naming it."""
    source = f"{what} {path}".strip()
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"cannot read {source}: {exc.strerror or exc}", hint=hint) from None
    return parse_json(content, source, error, hint)
