"""`segcli report` finds the dataset of every kind of run: recipe, planned, resumed; a moved
dataset is a one-line error; a report that fails after training fails the command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY = [
    "--set", "train.epochs=1", "--set", "train.workers=0", "--set", "input.size=[32,32]",
    "--set", "train.batch_size=16", "--set", "model.base_width=4", "--set", "model.depth=2",
    "--max-steps", "1",
]  # fmt: skip


@pytest.fixture
def project(tmp_path, shapes_dataset) -> Path:
    """A working folder holding data/shapes, where the shapes-unet recipe looks for it."""
    folder = tmp_path / "project"
    shutil.copytree(shapes_dataset, folder / "data" / "shapes")
    (tmp_path / "elsewhere").mkdir()
    return folder


def _trained(cli, project: Path, *args: str) -> Path:
    result = cli("train", *args, *TINY, "--runs-dir", "runs", cwd=project)
    assert result.exit_code == 0, result.stderr
    [run] = (project / "runs").iterdir()
    assert 'class="worst"' in (run / "report.html").read_text()  # written after training
    return run


def _report_from_elsewhere(cli, run: Path) -> None:
    (run / "report.html").unlink()
    result = cli("report", run, "--worst", "2", cwd=run.parents[2] / "elsewhere")
    assert result.exit_code == 0, result.stderr
    assert 'class="worst"' in (run / "report.html").read_text()


def test_a_recipe_run_is_reported_and_a_moved_dataset_is_one_line(cli, project):
    run = _trained(cli, project, "--plugin", "shapes-unet")  # dataset.path left unset
    _report_from_elsewhere(cli, run)
    (project / "data").rename(project / "moved")
    result = cli("report", run)
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert f"the dataset of run {run} is no longer at {project / 'data' / 'shapes'}" in line
    assert "segcli evaluate NEW_PLACE --checkpoint" in line


def test_a_planned_run_on_a_relative_folder_is_reported_from_anywhere(cli, project):
    run = _trained(cli, project, "--data", "data/shapes", "--time", "2m")
    _report_from_elsewhere(cli, run)


def test_a_resumed_run_is_reported(cli, project):
    run = _trained(cli, project, "--plugin", "shapes-unet")
    (run / "report.html").unlink()
    result = cli("train", "--resume", run, "--set", "train.epochs=2", cwd=project)
    assert result.exit_code == 0, result.stderr
    assert 'class="worst"' in (run / "report.html").read_text()
    _report_from_elsewhere(cli, run)


def test_a_report_failing_after_training_fails_the_command_and_keeps_the_run(
    cli, project, monkeypatch
):
    from segcli.errors import DataError

    def broken(*args, **kwargs):
        raise DataError("no space for pictures", hint="free some")

    monkeypatch.setattr("segcli.report.write_report", broken)
    result = cli("train", "--plugin", "shapes-unet", *TINY, "--runs-dir", "runs", cwd=project)
    assert result.exit_code == 3
    [run] = (project / "runs").iterdir()
    said = "but its report was not written: no space for pictures (free some)"
    assert f"training finished (checkpoints in {run.relative_to(project)}) {said}" in result.stderr
    assert (run / "best.safetensors").is_file() and not (run / "report.html").exists()
