"""What a run writes besides checkpoints: metrics.jsonl and metrics.csv (one record per
epoch), TensorBoard scalars, and summary.json at the end."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from segcli.engine.metrics_log import read_metrics
from segcli.errors import ConfigError


class RunLog:
    """The metrics files of one run folder (and TensorBoard, when `log.tensorboard`)."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.run_dir = run_dir
        self.writer = _tensorboard(run_dir) if tensorboard else None

    def append(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as stream:
                rows = list(csv.DictReader(stream))
        _write_csv(path, [*rows, _scalars(record)])
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, record["epoch"])

    def forget_after(self, epoch: int) -> None:
        """Keep only the records of epochs up to `last`: later ones, and a line torn by a
        crash in the middle of an append, are what a killed process leaves behind."""
        from segcli.data.io import atomic_write

        records = [r for r in read_metrics(self.run_dir) if r["epoch"] <= epoch]
        with atomic_write(self.run_dir / "metrics.jsonl") as stream:
            stream.write("".join(json.dumps(r) + "\n" for r in records).encode())
        _write_csv(self.run_dir / "metrics.csv", [_scalars(r) for r in records])

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "log.tensorboard=true needs the tensorboard package, which is not installed",
            hint="pip install tensorboard, or drop --set log.tensorboard=true",
        ) from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float))}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    temporary = path.with_suffix(".csv.tmp")
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)
