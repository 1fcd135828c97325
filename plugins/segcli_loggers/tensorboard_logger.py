"""TensorBoard: the numbers of every epoch as scalars, the configuration as text."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segcli import ConfigError, Logger, scalars


class TensorBoardLogger(Logger):
    """Event files in `RUN/<folder>`: `tensorboard --logdir runs` shows every run."""

    def __init__(self, run_dir: Path, config: Any, *, folder: str = "tensorboard") -> None:
        self.folder = run_dir / folder
        self.params: Mapping[str, Any] = {}
        self.purge_step: int | None = None
        self.writer: Any = None

    @staticmethod
    def check(config: Any, *, folder: str = "tensorboard") -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(
                "log.loggers: logger 'tensorboard' needs the tensorboard package, which is "
                "not installed",
                hint="pip install tensorboard, or take tensorboard out of log.loggers",
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def forget_after(self, epoch: int) -> None:
        # TensorBoard drops the events of later epochs when the writer opens
        self.purge_step = epoch + 1

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            self.writer = self._open()
        for key, value in scalars(record):
            if key != "epoch":
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def _open(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.folder), purge_step=self.purge_step)
        if self.purge_step is None and self.params:
            rows = "\n".join(f"| {key} | {value} |" for key, value in self.params.items())
            writer.add_text("config", f"| key | value |\n|---|---|\n{rows}")
        return writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
