"""What a run writes besides checkpoints: metrics.jsonl and metrics.csv (one record per
epoch), TensorBoard scalars, and summary.json at the end."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from segcli.data.io import atomic_write
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
        self._write_csv(read_metrics(self.run_dir))
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, record["epoch"])

    def forget_after(self, epoch: int) -> None:
        """Keep only the records of epochs up to `last`: later ones, and a line torn by a
        crash in the middle of an append, are what a killed process leaves behind."""
        records = [r for r in read_metrics(self.run_dir) if r["epoch"] <= epoch]
        with atomic_write(self.run_dir / "metrics.jsonl") as stream:
            stream.write("".join(json.dumps(r) + "\n" for r in records).encode())
        self._write_csv(records)

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        """metrics.csv, derived whole from metrics.jsonl (the record of truth)."""
        rows = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in records]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
        with atomic_write(self.run_dir / "metrics.csv") as stream:
            stream.write(text.getvalue().encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        with atomic_write(self.run_dir / "summary.json") as stream:
            stream.write(json.dumps(summary, indent=2).encode())

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
