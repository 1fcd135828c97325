"""Loggers: a plugin kind told every run's params, epochs and summary; the built-in TensorBoard
and MLflow loggers; bad names, options and missing packages refused before a run folder."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

from segcli.config import build_config
from segcli.errors import ConfigError
from segcli.testing.tools import require_module

RECORDING_PLUGIN = """
import segcli
from segcli.hookspecs import Logger

CALLS = []


@segcli.hookimpl
def register_loggers(register):
    register("recording", "recording_logger_plugin:Recording", "Remembers what it is told")
    register("flaky", "recording_logger_plugin:Flaky", "Fails on its first epoch")


class Recording(Logger):
    def __init__(self, run_dir, config, *, tag: str = ""):
        CALLS.append(("start", run_dir, config.train.epochs, tag))

    def log_params(self, params):
        CALLS.append(("params", dict(params)))

    def forget_after(self, epoch):
        CALLS.append(("forget_after", epoch))

    def log_epoch(self, record):
        CALLS.append(("epoch", dict(record)))

    def log_summary(self, summary):
        CALLS.append(("summary", dict(summary)))

    def close(self):
        CALLS.append(("close",))


class Flaky(Logger):
    def __init__(self, run_dir, config):
        pass

    def log_epoch(self, record):
        CALLS.append(("flaky", record["epoch"]))
        raise KeyError("tracking server went away")
"""

BROKEN_PLUGIN = """
import segcli


@segcli.hookimpl
def register_loggers(register):
    raise RuntimeError("cannot reach the tracking service")
"""


@pytest.fixture
def recording_plugin(tmp_path, monkeypatch):
    """The recording logger installed as a throwaway distribution and loaded in this process."""
    from fake_distributions import make_distribution

    import segcli.plugins

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(
        site, "segcli-recording", "recording_logger_plugin", RECORDING_PLUGIN, "recording"
    )
    monkeypatch.syspath_prepend(str(site))
    plugins = segcli.plugins.load_plugins()
    monkeypatch.setattr(segcli.plugins, "_loaded", plugins)
    assert plugins.loggers.entry("recording").origin.distribution == "segcli-recording"
    import recording_logger_plugin

    recording_logger_plugin.CALLS.clear()
    yield recording_logger_plugin.CALLS
    sys.modules.pop("recording_logger_plugin")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("datasets") / "shapes"
    build_dataset(prepare(None, train=4, val=2, test=0, size=32), out, workers=1)
    return out


def tiny_run(dataset: Path, runs: Path, *overrides: str):
    return build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion"]},
        overrides=[
            f'dataset.path="{dataset}"',
            f'runs_dir="{runs}"',
            "model.base_width=4",
            "model.depth=2",
            "input.size=[32,32]",
            "train.batch_size=2",
            "train.workers=0",
            "train.epochs=2",
            *overrides,
        ],
    )


def test_a_plugins_logger_is_told_params_every_epoch_and_the_summary(
    recording_plugin, small_dataset, tmp_path
):
    from segcli.runs.metrics import read_metrics
    from segcli.training.fit import fit

    config = tiny_run(
        small_dataset,
        tmp_path / "runs",
        "log.loggers=[recording]",
        'log.options={recording={tag="t"}}',
    )
    run_dir = fit(config)
    calls = recording_plugin
    assert calls[0] == ("start", run_dir, 2, "t")
    assert calls[1][0] == "params"
    assert calls[1][1]["train.epochs"] == 2 and calls[1][1]["log.loggers"] == ["recording"]
    assert [c[1] for c in calls if c[0] == "epoch"] == read_metrics(run_dir)
    summaries = [c[1] for c in calls if c[0] == "summary"]
    assert summaries == [json.loads((run_dir / "summary.json").read_text())]
    assert calls.count(("close",)) == 1


def test_the_logger_calls_come_in_the_documented_order(recording_plugin, tmp_path):
    from segcli.runs.log import RunLog

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = build_config(overrides=["log.loggers=[recording]"])
    log = RunLog(run_dir, config)
    log.forget_after(0)
    log.append({"epoch": 1, "train/loss": 0.5})
    log.write_summary({"best": 0.5})
    log.close()
    assert [c[0] for c in recording_plugin] == [
        "start",
        "params",
        "forget_after",
        "epoch",
        "summary",
        "close",
    ]
    assert (run_dir / "summary.json").is_file()


def test_a_failing_logger_is_one_warning_and_the_run_goes_on(
    recording_plugin, small_dataset, tmp_path, caplog
):
    from segcli.runs.metrics import read_metrics
    from segcli.training.fit import fit

    config = tiny_run(small_dataset, tmp_path / "runs", "log.loggers=[flaky,recording]")
    with caplog.at_level(logging.WARNING, logger="segcli"):
        run_dir = fit(config)
    assert [c for c in recording_plugin if c[0] == "flaky"] == [("flaky", 1)]  # then dropped
    assert len([c for c in recording_plugin if c[0] == "epoch"]) == 2
    assert len(read_metrics(run_dir)) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'flaky' failed" in warnings[0]
    assert "tracking server went away" in warnings[0] and "\n" not in warnings[0]


def test_a_broken_logger_plugin_is_reported_and_skipped(tmp_path):
    from fake_distributions import make_distribution, segcli

    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-broken-log", "broken_logger_plugin", BROKEN_PLUGIN, "brk")
    statuses = {s["name"]: s for s in json.loads(segcli(site, "plugins", "--json").stdout)}
    assert statuses["brk"]["status"] == "failed"
    assert "cannot reach the tracking service" in statuses["brk"]["error"]
    listed = segcli(site, "list", "loggers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {row["name"] for row in json.loads(listed.stdout)} >= {"tensorboard", "mlflow"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["log.loggers=[mlflw]"], "log.loggers: unknown logger 'mlflw'; did you mean 'mlflow'?"),
        (
            ["log.loggers=[tensorboard]", 'log.options={tensorboard={dir="x"}}'],
            "log.options.tensorboard.dir = 'x' (from --set log.options=",
        ),
        (['log.options={mlflow={experiment="x"}}'], "log.options.mlflow (from --set"),
    ],
)
def test_bad_loggers_are_one_line_errors_before_the_run_folder(
    cli, small_dataset, tmp_path, overrides, message
):
    runs = tmp_path / "runs"
    sets = [f"--set={o}" for o in overrides]
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", f'dataset.path="{small_dataset}"',
        "--runs-dir", str(runs), "--max-steps", "1", *sets,
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and message in error[0], result.stderr
    assert not runs.exists()


@pytest.mark.parametrize("name, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_logger_whose_package_is_missing_is_refused_in_preflight(monkeypatch, name, package):
    from segcli.training.preflight import check_loggers

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda module: None if module == package else find_spec(module)
    )
    with pytest.raises(ConfigError) as caught:
        check_loggers(build_config(overrides=[f"log.loggers=[{name}]"]))
    assert f"logger '{name}' needs the {package} package, which is not installed" in str(
        caught.value
    )


def test_the_tensorboard_logger_writes_event_files(small_dataset, tmp_path):
    require_module("tensorboard", why="pip install -e '.[test]' installs it")
    from segcli.training.fit import fit

    run_dir = fit(tiny_run(small_dataset, tmp_path / "runs", "log.loggers=[tensorboard]"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    require_module("mlflow")
    # MLflow 3 keeps file stores behind this switch; sqlite needs the full mlflow package
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_the_mlflow_logger_records_params_metrics_per_epoch_and_the_run_folder(
    mlflow_store, small_dataset, tmp_path
):
    from mlflow.tracking import MlflowClient

    from segcli.training.fit import fit

    config = tiny_run(
        small_dataset,
        tmp_path / "runs",
        "log.loggers=[mlflow]",
        f'log.options={{mlflow={{tracking_uri="{mlflow_store}",experiment="tiny"}}}}',
    )
    run_dir = fit(config)
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(run_id)
    assert run.info.run_name == run_dir.name
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.name"] == "unet"
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in history] == pytest.approx([r["train/loss"] for r in records])
    assert [m.step for m in client.get_metric_history(run_id, "confusion/iou/0")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.toml", "metrics.jsonl", "best.safetensors", "last.safetensors"} <= artifacts


def test_the_mlflow_run_ends_finished_with_the_best_value_and_resumes(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    from segcli.runs.log import RunLog

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = build_config(
        overrides=[
            "log.loggers=[mlflow]",
            f'log.options={{mlflow={{tracking_uri="{mlflow_store}"}}}}',
        ]
    )
    log = RunLog(run_dir, config)
    log.append({"epoch": 1, "train/loss": 0.5})
    log.close()  # killed: no summary
    client = MlflowClient(tracking_uri=mlflow_store)
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    resumed = RunLog(run_dir, config)
    resumed.forget_after(1)
    resumed.append({"epoch": 2, "train/loss": 0.25})
    resumed.write_summary({"best": 0.25, "best_epoch": 2, "monitor": "train/loss"})
    resumed.close()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2]
    assert run.data.metrics["best/train/loss"] == 0.25
    assert "summary.json" in {a.path for a in client.list_artifacts(run_id)}


def test_an_mlflow_store_it_cannot_open_is_refused_in_preflight():
    require_module("mlflow")
    from segcli.training.preflight import check_loggers

    uri = "nosuchstore://tracking"
    config = build_config(
        overrides=["log.loggers=[mlflow]", f'log.options={{mlflow={{tracking_uri="{uri}"}}}}']
    )
    with pytest.raises(ConfigError, match="^log.options.mlflow.tracking_uri: MLflow cannot use"):
        check_loggers(config)
