"""Checkpoints record their format version; one without it, or of a version this segcli does
not read, is refused on one line (exit 5) before anything is built from it, by every command
that reads checkpoints. The export sidecar has its own version: an older one is refused too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from segcli.errors import CheckpointError
from segcli.inference.exported_models import SIDECAR_VERSION
from segcli.runs.checkpoint_file import FORMAT_VERSION, load_checkpoint, read_checkpoint_meta

VERSION_KEY = "segcli.format_version"


def header_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def with_version(source: Path, target: Path, version: str | None) -> Path:
    """A copy of `source` whose header records `version` (None: no version at all)."""
    header = header_of(source)
    header.pop(VERSION_KEY)
    if version is not None:
        header[VERSION_KEY] = version
    save_file(load_file(str(source)), str(target), metadata=header)
    return target


@pytest.fixture
def best(trained_run: Path) -> Path:
    return trained_run / "best.safetensors"


def test_every_checkpoint_training_writes_records_the_format_version(trained_run):
    for name in ("best", "last"):
        assert header_of(trained_run / f"{name}.safetensors")[VERSION_KEY] == "1"
    assert FORMAT_VERSION == 1


@pytest.mark.parametrize(
    "version, found, hint",
    [
        (None, "records no format version", "train it again with this segcli"),
        (str(FORMAT_VERSION + 1), f"has format version {FORMAT_VERSION + 1}, newer", "upgrade"),
        ("0", "has format version '0', which this segcli does not read", "train it again"),
        ("one", "has format version 'one', which this segcli does not read", "train it again"),
    ],
)
def test_a_checkpoint_of_another_version_is_refused_on_one_line(
    cli, best, shapes_dataset, tmp_path, version, found, hint
):
    path = with_version(best, tmp_path / "best.safetensors", version)
    for read in (read_checkpoint_meta, load_checkpoint):
        with pytest.raises(CheckpointError, match=f"^checkpoint {path} {found}"):
            read(path)
    images = shapes_dataset / "val" / "images"
    result = cli("predict", images, "--checkpoint", path, "--out", tmp_path / "pred")
    assert result.exit_code == 5
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert f"; this segcli reads format version {FORMAT_VERSION} ({hint}" in message
    assert not (tmp_path / "pred").exists()


def test_resuming_a_run_whose_last_has_no_version_says_how_to_go_on(cli, trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / trained_run.name))
    with_version(trained_run / "last.safetensors", run / "last.safetensors", None)
    result = cli("train", "--resume", run, "--set", "train.epochs=1")  # checked after `last`
    assert result.exit_code == 5
    message = result.stderr.strip()
    assert "\n" not in message and "records no format version" in message
    assert "--set model.weights=" in message  # from its best weights, which still load


def test_the_export_sidecar_keeps_its_own_version(cli, best, tmp_path):
    from segcli.inference.predictor import Predictor

    exported = tmp_path / "model.pt"
    result = cli("export", "--checkpoint", best, "--format", "torchscript", "--out", exported)
    assert result.exit_code == 0, result.stderr
    sidecar = json.loads((tmp_path / "model.pt.json").read_text())
    assert sidecar["segcli_export"] == SIDECAR_VERSION and "format_version" not in sidecar
    assert Predictor(exported, "cpu").classes  # read by the sidecar's rules, not a checkpoint's


TINY = [
    "--set", "train.epochs=1", "--set", "train.workers=0", "--set", "input.size=[32,32]",
    "--set", "train.batch_size=16", "--set", "model.base_width=4", "--set", "model.depth=2",
    "--max-steps", "1",
]  # fmt: skip

# every command that reads a checkpoint, given a run folder (RUN), the dataset (DATA) and an
# output folder (OUT)
READERS = {
    "predict": ["predict", "DATA/val/images", "--checkpoint", "RUN", "--out", "OUT/masks"],
    "evaluate": ["evaluate", "DATA", "--checkpoint", "RUN", "--out", "OUT/scores.json"],
    "export": ["export", "--checkpoint", "RUN", "--format", "torchscript", "--out", "OUT/m.pt"],
    "profile": ["profile", "RUN", "--runs", "1", "--batch", "1"],
    "visualize-predictions": [
        "visualize", "predictions", "DATA", "--checkpoint", "RUN", "--out", "OUT/rows.png"
    ],
    "visualize-confusion": ["visualize", "confusion", "RUN", "--out", "OUT/confusion.png"],
    "report": ["report", "RUN", "--out", "OUT/report.html"],
    "train-resume": ["train", "--resume", "RUN", "--set", "train.epochs=3"],
    "train-from-weights": [
        "train", "--plugin", "shapes-unet", "--set", 'dataset.path="DATA"',
        "--set", "model.weights=RUN/best.safetensors", "--runs-dir", "OUT/runs", *TINY,
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", list(READERS))
def test_every_command_refuses_a_newer_checkpoint_on_one_line(
    cli, trained_run, shapes_dataset, tmp_path, command
):
    run = Path(shutil.copytree(trained_run, tmp_path / trained_run.name))
    for name in ("best", "last"):
        newer = str(FORMAT_VERSION + 1)
        with_version(trained_run / f"{name}.safetensors", run / f"{name}.safetensors", newer)
    (tmp_path / "out").mkdir()
    places = {"RUN": str(run), "DATA": str(shapes_dataset), "OUT": str(tmp_path / "out")}
    args = []
    for arg in READERS[command]:
        for name, place in places.items():
            arg = arg.replace(name, place)
        args.append(arg)
    result = cli(*args)
    assert result.exit_code == 5, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: checkpoint {run}/"), result.stderr
    assert f"has format version {FORMAT_VERSION + 1}, newer than this segcli" in message
    assert "upgrade segcli" in message and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "version, found, hint",
    [
        (1, "is of version 1, written by an earlier segcli", "segcli export --checkpoint RUN"),
        (None, "is of version 1, written by an earlier segcli", "--format torchscript"),
        (SIDECAR_VERSION + 1, f"has version {SIDECAR_VERSION + 1}, newer", "upgrade segcli"),
    ],
    ids=["older", "unversioned", "newer"],
)
def test_an_export_sidecar_of_another_version_is_refused_on_one_line(
    cli, best, shapes_dataset, tmp_path, version, found, hint
):
    exported = tmp_path / "model.pt"
    result = cli("export", "--checkpoint", best, "--format", "torchscript", "--out", exported)
    assert result.exit_code == 0, result.stderr
    sidecar = tmp_path / "model.pt.json"
    record = json.loads(sidecar.read_text())
    record.pop("segcli_export")
    if version is not None:
        record["segcli_export"] = version
    sidecar.write_text(json.dumps(record))
    images = shapes_dataset / "val" / "images"
    result = cli("predict", images, "--checkpoint", exported, "--out", tmp_path / "pred")
    assert result.exit_code == 5
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: export sidecar {sidecar} {found}") and hint in line
    assert not (tmp_path / "pred").exists()
