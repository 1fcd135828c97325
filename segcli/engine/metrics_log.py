"""A run's metrics.jsonl, read without torch (the CLI's summary and `visualize curves` use it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segcli.errors import DataError


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, one per epoch.

    A final line that is not valid JSON is what a crash in the middle of an append leaves:
    it is dropped. A bad line before it means the file was damaged, and is an error.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise DataError(
                f"{path} line {number} is not a JSON record",
                hint="delete that line (and those of later epochs) to resume",
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise DataError(
                f"{path} line {number} is not a metrics record (it has no epoch)",
                hint="delete that line (and those of later epochs) to resume",
            )
        records.append(record)
    return records
