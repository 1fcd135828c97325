"""Run folders stay usable whatever ended a run: failures, Ctrl-C, torn logs, bad datasets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli.config import build_config, to_toml
from segcli.errors import CheckpointError, DataError, Interrupted
from segcli.runs.checkpoint_file import read_checkpoint_meta
from segcli.runs.folders import find_checkpoint, newest_run
from segcli.runs.metrics import read_metrics
from segcli.training.fit import fit

TINY = [
    "model.base_width=4",
    "model.depth=2",
    "input.size=[32,32]",
    "train.batch_size=16",
    "train.workers=0",
]


def tiny_config(dataset: Path, runs: Path, *extra: str):
    return build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion"]},
        overrides=[f'dataset.path="{dataset}"', f'runs_dir="{runs}"', *TINY, *extra],
    )


def make_run(runs: Path, name: str, *files: str) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text("")
    for file in files:
        (run / file).write_bytes(b"")
    return run


def test_newest_run_passes_over_folders_without_a_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    good = make_run(runs, "20260101-000000-good", "best.safetensors", "last.safetensors")
    only_best = make_run(runs, "20260101-000001-best-only", "best.safetensors")
    junk = make_run(runs, "20260101-000002-junk")
    os.utime(good, (1, 1))
    os.utime(only_best, (2, 2))
    os.utime(junk, (3, 3))
    assert newest_run(runs) == only_best
    assert find_checkpoint(None, runs) == only_best / "best.safetensors"
    assert newest_run(runs, checkpoints=("last",)) == good


def test_no_run_with_a_checkpoint_says_so(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "20260101-000000-junk")
    with pytest.raises(CheckpointError, match="none of the 1 run folder"):
        newest_run(runs)


class InterruptAt:
    """A reporter that raises at the first step of a given (0-based) epoch."""

    def __init__(self, epoch: int, error: BaseException) -> None:
        self.epoch, self.error = epoch, error

    def start(self, run_dir, epochs, steps_per_epoch, **budget):
        pass

    def step(self, epoch, step, loss, images_per_second):
        if epoch == self.epoch:
            raise self.error

    def epoch_end(self, record, best):
        pass

    def run_end(self, run_dir):
        pass


def test_ctrl_c_after_a_checkpoint_says_what_was_kept(shapes_dataset, tmp_path):
    runs = tmp_path / "runs"
    config = tiny_config(shapes_dataset, runs, "train.epochs=3")
    with pytest.raises(Interrupted) as caught:
        fit(config, reporter=InterruptAt(1, KeyboardInterrupt()))
    [run] = runs.iterdir()
    assert str(caught.value) == (
        f"interrupted; last checkpoint kept at {run / 'last.safetensors'} (epoch 1); "
        f"resume with `segcli train --resume {run}`"
    )
    assert caught.value.exit_code == 130
    assert [r["epoch"] for r in read_metrics(run)] == [1]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), DataError("a bad mask")])
def test_a_run_that_ends_before_its_first_checkpoint_leaves_no_folder(
    shapes_dataset, tmp_path, error
):
    runs = tmp_path / "runs"
    config = tiny_config(shapes_dataset, runs, "train.epochs=2")
    with pytest.raises((Interrupted, DataError)) as caught:
        fit(config, reporter=InterruptAt(0, error))
    if isinstance(error, KeyboardInterrupt):
        assert "interrupted before the first checkpoint; nothing was kept" in str(caught.value)
    assert not runs.exists()  # made for this run, so removed with it


def test_a_failed_first_run_keeps_a_runs_folder_that_was_already_there(shapes_dataset, tmp_path):
    runs = tmp_path / "runs"
    (runs / "notes").mkdir(parents=True)
    config = tiny_config(shapes_dataset, runs, "train.epochs=2")
    with pytest.raises(DataError):
        fit(config, reporter=InterruptAt(0, DataError("a bad mask")))
    assert [p.name for p in runs.iterdir()] == ["notes"]


def test_sigint_during_training_exits_130_with_one_line_and_the_run_resumes(
    shapes_dataset, tmp_path
):
    runs = tmp_path / "runs"
    config_file = tmp_path / "config.toml"
    config_file.write_text(to_toml(tiny_config(shapes_dataset, runs, "train.epochs=200")))
    process = subprocess.Popen(
        [sys.executable, "-m", "segcli", "train", "--config", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job starts with SIGINT ignored, and Python keeps it ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if list(runs.glob("*/last.safetensors")):
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    [run] = runs.iterdir()
    assert f"last checkpoint kept at {run / 'last.safetensors'} (epoch " in errors[0]
    assert f"resume with `segcli train --resume {run}`" in errors[0]
    epoch = read_checkpoint_meta(run / "last.safetensors")["epoch"]
    fit(None, resume=run, max_steps=1)  # one more step: the run continues where it was
    assert read_checkpoint_meta(run / "last.safetensors")["epoch"] == epoch + 1


def test_resume_drops_a_torn_last_line_of_the_metrics_log(shapes_dataset, tmp_path):
    from segcli.cli.train import print_summary

    run = fit(tiny_config(shapes_dataset, tmp_path / "runs", "train.epochs=2"), max_steps=1)
    with open(run / "metrics.jsonl", "a") as stream:
        stream.write('{"epoch": 2, "step": 4, "tra')  # the crash came mid-append
    print_summary(run)
    assert fit(None, resume=run) == run
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    assert (run / "metrics.jsonl").read_text().endswith("}\n")
    assert len((run / "metrics.csv").read_text().splitlines()) == 3


def test_a_damaged_line_inside_the_metrics_log_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl line 2 is not a JSON record"):
        read_metrics(tmp_path)


def copy_dataset(shapes_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    shutil.copytree(shapes_dataset, root)
    return root


def edit_dataset_json(root: Path, **changes) -> None:
    info = json.loads((root / "dataset.json").read_text())
    info.update(changes)
    (root / "dataset.json").write_text(json.dumps(info))


@pytest.mark.parametrize("recorded_in", ["dataset.json", "report.json"])
def test_fewer_classes_than_mask_values_is_refused_before_a_run_folder(
    shapes_dataset, tmp_path, recorded_in
):
    root = copy_dataset(shapes_dataset, tmp_path)
    info = json.loads((root / "dataset.json").read_text())
    changes = {"classes": info["classes"][:3]}
    if recorded_in == "report.json":  # dataset.json's own pixel counts agree with it
        changes["class_pixels"] = {k: v[:3] for k, v in info["class_pixels"].items()}
    edit_dataset_json(root, **changes)
    with pytest.raises(DataError, match=r"hold value\(s\) \[3\].* lists 3 classes"):
        fit(tiny_config(root, tmp_path / "runs", "train.epochs=1"))
    assert not (tmp_path / "runs").exists()


def test_a_mask_value_without_a_class_names_the_mask_even_from_a_loader_worker(
    shapes_dataset, tmp_path
):
    from torch.utils.data import DataLoader

    from segcli.data.dataset import SegmentationDataset, build_transforms

    root = copy_dataset(shapes_dataset, tmp_path)
    mask_path = sorted((root / "train" / "masks").iterdir())[0]
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 7
    Image.fromarray(mask).save(mask_path)
    config = tiny_config(root, tmp_path / "runs")
    dataset = SegmentationDataset(root, "train", build_transforms(config.input, None, 3))
    loader = DataLoader(dataset, batch_size=4, num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert str(caught.value) == (
        f"mask {mask_path} has value 7, but dataset.json lists 4 classes (0-3; 255 = ignore) "
        "(write the dataset again with `segcli prepare ... --force`)"
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"image_channels": "three"}, "'image_channels' must be 1 or 3, not \"three\""),
        ({"classes": None}, "has no 'classes'"),
        ({"classes": [{"id": 0, "name": "bg"}]}, "classes[0] must be"),
        ({"splits": ["train"]}, "'splits' must be an object"),
    ],
)
def test_dataset_json_fields_are_checked_when_it_is_read(
    shapes_dataset, tmp_path, changes, message
):
    from segcli.data.format import read_dataset_info

    root = copy_dataset(shapes_dataset, tmp_path)
    info = json.loads((root / "dataset.json").read_text())
    info.update(changes)
    info = {k: v for k, v in info.items() if v is not None}
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataError) as caught:
        read_dataset_info(root)
    assert str(caught.value).startswith(f"{root / 'dataset.json'}")
    assert message in str(caught.value)
    assert "segcli prepare" in str(caught.value)


def test_a_run_records_its_folds_file_relative_to_itself_and_reads_it_from_anywhere(
    tmp_path, monkeypatch
):
    from segcli.runs.folders import write_config

    fold = tmp_path / "cv" / "fold-1"
    fold.mkdir(parents=True)
    folds_file = str(tmp_path / "cv" / "folds.json")
    config = build_config(overrides=[f'dataset.folds="{folds_file}"', "dataset.fold=1"])
    write_config(fold, config)
    assert 'folds = "../folds.json"' in (fold / "config.toml").read_text()
    shutil.move(tmp_path / "cv", tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")  # a relative configuration path, another folder
    moved = build_config(config_file=Path("fold-1") / "config.toml")
    assert Path(moved.dataset.folds) == (tmp_path / "moved" / "folds.json").resolve()
    # on the command line a relative folds file is the working directory's, as any path
    given = build_config(overrides=['dataset.folds="folds.json"', "dataset.fold=1"])
    write_config(Path("fold-1"), given)
    assert build_config(config_file=Path("fold-1") / "config.toml").dataset.folds == (
        moved.dataset.folds
    )
