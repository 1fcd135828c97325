"""Faults at exact moments: SIGKILL, a full disk and Ctrl-C during prepare, train and predict.

Each test first makes a good output (a prepared dataset, a trained run, predictions), then runs
the command again over the same place with a fault injected, and checks that the earlier output
is intact byte for byte, that no file with a final name is half written, that the exit code and
its one-line message are the documented ones, and that a re-run (or `--resume`) then succeeds.

The moment is chosen by tests/reliability/fault_wrapper.py, which runs the real segcli with one
point armed: the process waits there and the test sends the signal, so nothing depends on timing.
After a SIGKILL a hidden temporary file may remain (nothing can remove it); it must never carry a
final name and must not disturb a re-run. After a clean stop (full disk, Ctrl-C) none may remain.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from child_processes import takes_ctrl_c
from PIL import Image
from reliability_helpers import (
    TINY_TRAIN,
    Result,
    check_error_output,
    child_env,
    run_segcli,
    shape_pair,
    snapshot,
    temporaries,
    visible,
    write_raw_folder,
)

pytestmark = pytest.mark.slow

WRAPPER = Path(__file__).with_name("fault_wrapper.py")
STEPS_PER_EPOCH = 4  # 8 training images, batch size 2


# ---------------------------------------------------------------------------------- helpers


class Child:
    """segcli under fault_wrapper.py, in its own session so Ctrl-C can reach the whole group."""

    def __init__(self, args, cwd: Path, fault: str) -> None:
        self.marker = cwd.parent / f"{cwd.name}-paused"
        # files, not pipes: a surviving worker would hold a pipe open and hang the reader
        self.logs = [cwd.parent / f"{cwd.name}-{name}.log" for name in ("stdout", "stderr")]
        env = {**child_env(), "SEGCLI_FAULT": fault, "SEGCLI_FAULT_MARKER": str(self.marker)}
        with open(self.logs[0], "w") as stdout, open(self.logs[1], "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WRAPPER), *map(str, args)],
                cwd=cwd,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=takes_ctrl_c(),
            )
        self.workers: list[int] = []

    def wait_paused(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            if self.process.poll() is not None:
                result = self.finish()
                pytest.fail(
                    f"segcli ended ({result.exit_code}) before the fault point:\n"
                    f"{result.stdout}\n{result.stderr}"
                )
            assert time.monotonic() < deadline, "the fault point was never reached"
            time.sleep(0.02)
        self.workers = descendants(self.process.pid)

    def kill(self) -> Result:
        self.process.send_signal(signal.SIGKILL)  # the main process only, as the OOM killer would
        return self.finish()

    def interrupt(self) -> Result:
        os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        return self.finish()

    def finish(self, timeout: float = 60) -> Result:
        self.process.wait(timeout=timeout)
        return Result(self.process.returncode, *(log.read_text() for log in self.logs))

    def end_survivors(self) -> None:
        for pid in [self.process.pid, *self.workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)


@pytest.fixture
def children():
    """Every child started by a test; whatever survives it (orphaned workers) is ended by pid."""
    started: list[Child] = []

    def start(*args, **kwargs) -> Child:
        started.append(Child(*args, **kwargs))
        return started[-1]

    yield start
    for child in started:
        child.end_survivors()


def _limit_file_size(limit: int):
    def apply() -> None:  # Python ignores SIGXFSZ, so an oversized write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def descendants(pid: int) -> list[int]:
    """Processes whose parent chain leads to `pid` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def final_files(root: Path) -> list[Path]:
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def assert_complete_dataset(folder: Path) -> None:
    """A prepared dataset that exists has its dataset.json, and every picture in it opens."""
    assert (folder / "dataset.json").is_file(), f"{folder} exists without dataset.json"
    for path in final_files(folder):
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()


def assert_loadable_checkpoints(run: Path) -> None:
    from segcli.runs.checkpoint_file import load_checkpoint

    for path in run.glob("*.safetensors"):
        load_checkpoint(path, with_training_state=path.name == "last.safetensors")


def assert_readable_outputs(folder: Path) -> None:
    for path in final_files(folder):
        if path.name.endswith(".npy"):
            np.load(path)
        else:
            with Image.open(path) as image:
                image.load()


def interrupted_line(result: Result) -> str:
    assert result.exit_code == 130, result
    line = check_error_output(result.stderr)
    assert "interrupted" in line, line
    return line


def stray_report(root: Path) -> list[str]:
    """Temporary files left after a SIGKILL (nothing can remove them), shown with -rA."""
    found = temporaries(root)
    print(f"temporary files left under {root.name} after SIGKILL: {found or 'none'}")
    return found


# ---------------------------------------------------------------------------------- prepare


@pytest.fixture
def prepared(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """tmp/raw with 11 small pairs and one larger one, prepared once into tmp/ds."""
    images, masks = write_raw_folder(tmp_path / "raw", 11)
    rng = np.random.default_rng(7)
    big = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)  # noise: ~77 kB as PNG
    Image.fromarray(big).save(images / "big.png")
    big_mask = np.zeros((160, 160), np.uint8)
    big_mask[40:90, 30:100] = 255
    Image.fromarray(big_mask).save(masks / "big.png")
    result = run_segcli(
        "prepare", "folder", images, "--masks", masks, "--out", "ds", "--workers", "2", cwd=tmp_path
    )
    assert result.exit_code == 0, result.stderr
    return images, masks, snapshot(tmp_path)


def prepare_again(images: Path, masks: Path) -> list:
    return [
        "prepare",
        "folder",
        images,
        "--masks",
        masks,
        "--out",
        "ds",
        "--force",
        "--workers",
        "2",
    ]


def test_prepare_sigkill_keeps_the_dataset_and_its_workers_end(tmp_path, prepared, children):
    images, masks, before = prepared
    child = children(prepare_again(images, masks), tmp_path, "prepare-result:4:pause")
    child.wait_paused()
    assert len(child.workers) == 2, f"expected 2 pool workers, found {child.workers}"
    killed_at = time.monotonic()
    assert child.kill().exit_code == -signal.SIGKILL

    assert visible(snapshot(tmp_path)) == visible(before)  # raw and ds intact
    assert_complete_dataset(tmp_path / "ds")
    stray_report(tmp_path)

    rerun = run_segcli(*prepare_again(images, masks), cwd=tmp_path)
    assert rerun.exit_code == 0, rerun.stderr
    assert_complete_dataset(tmp_path / "ds")
    assert snapshot(tmp_path / "ds") == {
        k[3:]: v for k, v in before.items() if k.startswith("ds/") and k != "ds/"
    } | _volatile(tmp_path / "ds")
    assert temporaries(tmp_path) == [], "the re-run left (or kept) temporary folders"

    while any(alive(pid) for pid in child.workers) and time.monotonic() - killed_at < 5:
        time.sleep(0.05)
    survivors = [pid for pid in child.workers if alive(pid)]
    assert not survivors, f"pool workers {survivors} outlived their killed parent by 5 s"


def _volatile(dataset: Path) -> dict[str, str]:
    """report.json records the time the preparation took: it differs from run to run."""
    current = snapshot(dataset)
    return {"report.json": current["report.json"]}


def test_prepare_disk_full_exits_7_and_keeps_the_dataset(tmp_path, prepared, children):
    images, masks, before = prepared
    result = run_segcli(
        *prepare_again(images, masks), cwd=tmp_path, preexec_fn=_limit_file_size(32_000)
    )
    assert result.exit_code == 7, result
    check_error_output(result.stderr)
    assert visible(snapshot(tmp_path)) == visible(before), "a failed write changed files"
    assert temporaries(tmp_path) == []

    rerun = run_segcli(*prepare_again(images, masks), cwd=tmp_path)
    assert rerun.exit_code == 0, rerun.stderr


def test_prepare_ctrl_c_exits_130_and_keeps_the_dataset(tmp_path, prepared, children):
    images, masks, before = prepared
    child = children(prepare_again(images, masks), tmp_path, "prepare-result:4:pause")
    child.wait_paused()
    interrupted_line(child.interrupt())
    assert visible(snapshot(tmp_path)) == visible(before), "Ctrl-C changed files"
    assert temporaries(tmp_path) == []


# ------------------------------------------------------------------------------------ train


@pytest.fixture(scope="module")
def train_dataset(tmp_path_factory) -> Path:
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("fault-data") / "shapes"
    build_dataset(prepare(None, train=8, val=2, size=32), out, workers=1)
    return out


def tiny_train_args(dataset: Path) -> list[str]:
    return [
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        f'dataset.path="{dataset}"',
        "--set",
        "train.epochs=3",
        *TINY_TRAIN,
    ]


@pytest.fixture(scope="module")
def first_epoch_run(train_dataset, tmp_path_factory) -> Path:
    """A 3-epoch run stopped cleanly after its first epoch (--max-steps): resumable."""
    home = tmp_path_factory.mktemp("fault-runs")
    result = run_segcli(
        *tiny_train_args(train_dataset), "--max-steps", str(STEPS_PER_EPOCH), cwd=home
    )
    assert result.exit_code == 0, result.stderr
    (run,) = (home / "runs").iterdir()
    return run


@pytest.fixture
def run_copy(first_epoch_run, tmp_path) -> Path:
    run = tmp_path / "runs" / first_epoch_run.name
    shutil.copytree(first_epoch_run, run)
    return run


def resume_finishes(run: Path, cwd: Path) -> None:
    from segcli.runs.checkpoint_file import read_checkpoint_meta

    result = run_segcli("train", "--resume", run, cwd=cwd)
    assert result.exit_code == 0, result.stderr
    assert read_checkpoint_meta(run / "last.safetensors")["epoch"] == 3
    assert_loadable_checkpoints(run)


def checkpoints_of(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if k.endswith(".safetensors") and "/." not in k}


def test_train_sigkill_mid_epoch_then_resume(tmp_path, run_copy, children):
    before = snapshot(tmp_path)
    child = children(["train", "--resume", run_copy], tmp_path, "train-step:2:pause")
    child.wait_paused()
    assert child.kill().exit_code == -signal.SIGKILL
    assert checkpoints_of(snapshot(tmp_path)) == checkpoints_of(before)
    assert_loadable_checkpoints(run_copy)
    assert stray_report(tmp_path) == []  # no write was under way
    resume_finishes(run_copy, tmp_path)


def test_train_sigkill_mid_checkpoint_write_then_resume(tmp_path, run_copy, children):
    before = snapshot(tmp_path)
    result = children(
        ["train", "--resume", run_copy], tmp_path, "checkpoint-write:1:kill:last.safetensors"
    ).finish()
    assert result.exit_code == -signal.SIGKILL, result
    after = snapshot(tmp_path)
    last = f"runs/{run_copy.name}/last.safetensors"
    assert after[last] == before[last], "the previous last checkpoint was touched"
    assert_loadable_checkpoints(run_copy)
    stray_report(run_copy)
    resume_finishes(run_copy, tmp_path)


def test_train_disk_full_exits_7_then_resume(tmp_path, run_copy, children):
    best = (run_copy / "best.safetensors").stat().st_size
    last = (run_copy / "last.safetensors").stat().st_size
    assert best < last  # last also holds the optimiser state: a limit between them hits it
    before = snapshot(tmp_path)
    result = run_segcli(
        "train", "--resume", run_copy, cwd=tmp_path, preexec_fn=_limit_file_size((best + last) // 2)
    )
    assert result.exit_code == 7, result
    check_error_output(result.stderr)
    after = snapshot(tmp_path)
    assert (
        after[f"runs/{run_copy.name}/last.safetensors"]
        == before[f"runs/{run_copy.name}/last.safetensors"]
    )
    assert_loadable_checkpoints(run_copy)
    assert temporaries(tmp_path) == []
    resume_finishes(run_copy, tmp_path)


@pytest.mark.parametrize(
    "fault",
    ["train-step:2:pause", "checkpoint-write:1:pause:last.safetensors"],
    ids=["mid-epoch", "mid-checkpoint-write"],
)
def test_train_ctrl_c_exits_130_says_how_to_resume(tmp_path, run_copy, children, fault):
    before = snapshot(tmp_path)
    child = children(["train", "--resume", run_copy], tmp_path, fault)
    child.wait_paused()
    line = interrupted_line(child.interrupt())
    assert "--resume" in line and run_copy.name in line, line
    assert checkpoints_of(snapshot(tmp_path)) == checkpoints_of(before)
    assert temporaries(tmp_path) == []
    resume_finishes(run_copy, tmp_path)


def test_a_killed_new_run_does_not_hide_the_good_one(tmp_path, run_copy, train_dataset, children):
    """The killed run's folder has no checkpoint: predict (newest run by default) skips it."""
    child = children(tiny_train_args(train_dataset), tmp_path, "train-step:1:pause")
    child.wait_paused()
    child.kill()
    assert len(list((tmp_path / "runs").iterdir())) == 2
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(next((train_dataset / "val" / "images").iterdir()), images / "a.png")
    result = run_segcli("predict", images, "--out", "pred", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert run_copy.name in result.stdout
    assert (tmp_path / "pred" / "a.png").is_file()


# ---------------------------------------------------------------------------------- predict

PREDICT_OUTPUTS = ["--colorize", "--probabilities", "npy", "--batch-size", "1"]


def _predict_force() -> list[str]:
    """--force once predict has it (issue 13, defect 8): the re-run replaces its own outputs."""
    import inspect

    from segcli.cli.predict import predict

    return ["--force"] if "force" in inspect.signature(predict).parameters else []


@pytest.fixture(scope="module")
def first_predictions(first_epoch_run, tmp_path_factory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("fault-predict")
    images = home / "images"
    images.mkdir()
    for index in range(5):
        image, _ = shape_pair(index)
        Image.fromarray(image).save(images / f"p{index}.png")
    checkpoint = first_epoch_run / "best.safetensors"
    result = run_segcli(
        "predict", images, "--checkpoint", checkpoint, "--out", "pred", *PREDICT_OUTPUTS, cwd=home
    )
    assert result.exit_code == 0, result.stderr
    assert len(final_files(home / "pred")) == 15
    return home, checkpoint


@pytest.fixture
def predicted(first_predictions, tmp_path) -> tuple[list, dict[str, str]]:
    home, checkpoint = first_predictions
    shutil.copytree(home / "images", tmp_path / "images")
    shutil.copytree(home / "pred", tmp_path / "pred")
    args = [
        "predict",
        "images",
        "--checkpoint",
        checkpoint,
        "--out",
        "pred",
        *PREDICT_OUTPUTS,
        *_predict_force(),
    ]
    return args, snapshot(tmp_path)


def rerun_predict_same(args: list, tmp_path: Path, before: dict[str, str]) -> None:
    result = run_segcli(*args, cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert visible(snapshot(tmp_path)) == visible(before)


def test_predict_sigkill_leaves_whole_files_then_reruns(tmp_path, predicted, children):
    args, before = predicted
    child = children(args, tmp_path, "predict-write:5:pause")
    child.wait_paused()
    assert child.kill().exit_code == -signal.SIGKILL
    assert visible(snapshot(tmp_path)) == visible(before)
    assert_readable_outputs(tmp_path / "pred")
    stray_report(tmp_path / "pred")
    rerun_predict_same(args, tmp_path, before)


def test_predict_disk_full_exits_7_and_keeps_earlier_outputs(tmp_path, predicted, children):
    args, before = predicted
    result = run_segcli(*args, cwd=tmp_path, preexec_fn=_limit_file_size(2048))
    assert result.exit_code == 7, result
    check_error_output(result.stderr)
    assert visible(snapshot(tmp_path)) == visible(before)
    assert temporaries(tmp_path) == []
    rerun_predict_same(args, tmp_path, before)


def test_predict_ctrl_c_exits_130_and_keeps_earlier_outputs(tmp_path, predicted, children):
    args, before = predicted
    child = children(args, tmp_path, "predict-write:5:pause")
    child.wait_paused()
    interrupted_line(child.interrupt())
    assert visible(snapshot(tmp_path)) == visible(before)
    assert temporaries(tmp_path) == []
