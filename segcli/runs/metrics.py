"""A run's metrics.jsonl and summary.json, read without torch (the CLI's summary, `visualize`
and `report` use them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segcli.errors import DataError
from segcli.json_files import read_json


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
        except (json.JSONDecodeError, RecursionError):
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


# The fields of summary.json a reader relies on, and the JSON types each may have.
SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {
    "best": (int, float, type(None)),
    "best_epoch": (int, type(None)),
    "monitor": (str,),
    "epochs_run": (int,),
    "seconds": (dict,),
}


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's summary.json ({} when the run has none yet); a DataError naming the file when
    it is not a JSON object or a field has the wrong type (a damaged or hand-edited file)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return {}
    hint = "restore it, or delete it: metrics.jsonl holds every epoch's record"
    summary = read_json(path, error=DataError, hint=hint)
    if not isinstance(summary, dict):
        raise DataError(f"{path} is not a JSON object", hint=hint)
    for key, kinds in SUMMARY_FIELDS.items():
        value = summary.get(key)
        if key in summary and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise DataError(f"{path}: `{key}` has the wrong type ({value!r:.40})", hint=hint)
    return summary


def best_record(records: list[dict[str, Any]], best_epoch: int | None) -> dict[str, Any] | None:
    """The record of the best epoch (summary.json's `best_epoch`), else the last one."""
    chosen = next((r for r in records if r.get("epoch") == best_epoch), None)
    return chosen or (records[-1] if records else None)


def scalars(record: Mapping[str, Any]) -> list[tuple[str, float]]:
    """An epoch record's numbers for a tracker; a per-class list `confusion/iou` gives
    `confusion/iou/0`, `confusion/iou/1`, ... (booleans and tables are left out)."""
    found = []
    for key, value in record.items():
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        found.extend(
            (key if index is None else f"{key}/{index}", float(item))
            for index, item in items
            if isinstance(item, (int, float)) and not isinstance(item, bool)
        )
    return found
