"""What a run writes besides checkpoints: metrics.jsonl and metrics.csv (one record per
epoch) and summary.json at the end, always; and the same records told to the loggers of
`log.loggers` (TensorBoard, MLflow, a plugin's), each isolated from the others."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segcli.config import RunConfig
from segcli.errors import SegcliError
from segcli.files import atomic_write
from segcli.hookspecs import Logger
from segcli.plugins import Plugins, get_plugins
from segcli.registry import one_line
from segcli.runs.metrics import read_metrics

log = logging.getLogger(__name__)


class MetricsFiles(Logger):
    """metrics.jsonl (the record of truth: `--resume`, `visualize` and `report` read it),
    metrics.csv derived from it, and summary.json. Every run has them; a write failure is
    the run's error, not a warning."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def forget_after(self, epoch: int) -> None:
        """Keep only the records of epochs up to `epoch`: later ones, and a line torn by a
        crash in the middle of an append, are what a killed process leaves behind."""
        records = [r for r in read_metrics(self.run_dir) if r["epoch"] <= epoch]
        with atomic_write(self.run_dir / "metrics.jsonl") as stream:
            stream.write("".join(json.dumps(r) + "\n" for r in records).encode())
        self._write_csv(records)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        self._write_csv(read_metrics(self.run_dir))

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        """metrics.csv, derived whole from metrics.jsonl."""
        rows = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in records]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
        with atomic_write(self.run_dir / "metrics.csv") as stream:
            stream.write(text.getvalue().encode())

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        with atomic_write(self.run_dir / "summary.json") as stream:
            stream.write(json.dumps(summary, indent=2).encode())


class RunLog:
    """The metrics files of one run folder, and the loggers `config.log` names.

    The files come first, so a logger is only told what metrics.jsonl already holds. A
    logger that raises is reported in one warning line and dropped for the rest of the run;
    pre-flight (`check_loggers`) has already refused unknown names, wrong options and
    missing packages before the run folder existed.
    """

    def __init__(self, run_dir: Path, config: RunConfig, plugins: Plugins | None = None) -> None:
        self.run_dir = run_dir
        self.files = MetricsFiles(run_dir)
        self.loggers: dict[str, Any] = {}
        registry = (plugins or get_plugins()).loggers
        for name in config.log.loggers:
            options = config.log.options.get(name, {})
            with self._isolated(name), registry.factory_errors(name, options):
                self.loggers[name] = registry.get(name)(run_dir, config, **options)
        self._tell("log_params", flat_params(config.to_dict()))

    def append(self, record: dict[str, Any]) -> None:
        self.files.log_epoch(record)
        self._tell("log_epoch", record)

    def forget_after(self, epoch: int) -> None:
        self.files.forget_after(epoch)
        self._tell("forget_after", epoch)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.files.log_summary(summary)
        self._tell("log_summary", summary)

    def close(self) -> None:
        self._tell("close")

    def _tell(self, method: str, *args: Any) -> None:
        for name, logger in list(self.loggers.items()):
            call = getattr(logger, method, None)
            if call is not None:
                with self._isolated(name):
                    call(*args)

    @contextmanager
    def _isolated(self, name: str) -> Iterator[None]:
        """Around a logger's code: what it raises becomes one warning; the logger is dropped."""
        try:
            yield
        except Exception as error:
            self.loggers.pop(name, None)
            log.warning(
                "logger %r failed and is off for the rest of this run (the metrics files are "
                "complete): %s",
                name,
                error.message if isinstance(error, SegcliError) else one_line(error),
            )


def flat_params(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.001}} -> {"train.lr": 0.001}: a configuration as tracker params."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        elif value is not None:
            flat[f"{prefix}{key}"] = value
    return flat
