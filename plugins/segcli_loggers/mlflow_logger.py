"""MLflow: one MLflow run per segcli run, resumed with it.

The configuration goes in as params, every epoch's numbers as metrics (step = epoch), the
best value of the monitor at the end, and the run folder as artifacts when the run ends,
whether it finished or failed. `RUN/mlflow.json` remembers the MLflow run, so `--resume`
logs into the same one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segcli import ConfigError, Logger, atomic_write, scalars

LINK = "mlflow.json"
# MLflow takes at most 100 params and 1000 metrics in one call
_PARAMS_PER_CALL = 100


class MLflowLogger(Logger):
    """Logs to `tracking_uri` (default: MLflow's own, `MLFLOW_TRACKING_URI`), in
    `experiment` (default `MLFLOW_EXPERIMENT_NAME`, else "segcli"), as a run named after the
    run folder. `artifacts = false` leaves the run folder out (checkpoints can be large)."""

    def __init__(
        self,
        run_dir: Path,
        config: Any,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        artifacts: bool = True,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        self.artifacts = artifacts
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.finished = False
        link = run_dir / LINK
        if link.is_file():
            self.run_id = json.loads(link.read_text())["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "segcli"
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        run = self.client.create_run(
            experiment_id, run_name=run_dir.name, tags={"segcli.run_dir": str(run_dir.resolve())}
        )
        self.run_id = run.info.run_id
        record = {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}
        with atomic_write(link) as stream:
            stream.write(json.dumps(record, indent=2).encode())

    @staticmethod
    def check(
        config: Any,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        artifacts: bool = True,
    ) -> None:
        """mlflow is installed and can open the tracking store (a server is not contacted)."""
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(
                "log.loggers: logger 'mlflow' needs the mlflow package, which is not installed",
                hint="pip install 'segcli[mlflow]', or take mlflow out of log.loggers",
            )
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient(tracking_uri=tracking_uri)
        except MlflowException as error:
            problem = str(error.message).strip().splitlines()[0]
            raise ConfigError(
                f"log.options.mlflow.tracking_uri: MLflow cannot use "
                f"{tracking_uri or 'its default store'}: {problem}",
                hint="a file store needs MLFLOW_ALLOW_FILE_STORE=true with MLflow 3; a sqlite:/// "
                "store needs the full mlflow package",
            ) from None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # a resumed run keeps the params of its first start (MLflow refuses changes)
        known = self.client.get_run(self.run_id).data.params
        new = [Param(k, _text(v)) for k, v in params.items() if k not in known]
        for start in range(0, len(new), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=new[start : start + _PARAMS_PER_CALL])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now, epoch = int(time.time() * 1000), int(record["epoch"])
        metrics = [
            Metric(name, value, now, epoch) for name, value in scalars(record) if name != "epoch"
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if summary.get("best") is not None:
            self.client.log_metric(
                self.run_id,
                f"best/{summary['monitor']}",
                float(summary["best"]),
                step=int(summary["best_epoch"]),
            )
        self.finished = True

    def close(self) -> None:
        try:
            if self.artifacts and self.run_dir.is_dir():
                self.client.log_artifacts(self.run_id, str(self.run_dir))
        finally:
            self.client.set_terminated(self.run_id, "FINISHED" if self.finished else "FAILED")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
