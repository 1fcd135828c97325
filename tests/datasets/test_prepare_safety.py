"""`prepare` never harms its inputs or an existing dataset: output placement, --force, disk
full, Ctrl-C, SIGKILL (orphan workers, stale temporary folders) and the binary mask rule."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from child_processes import takes_ctrl_c
from PIL import Image
from raw_images import blob, noise, save
from segcli_datasets.folder import prepare as prepare_folder
from segcli_shapes.generate import prepare as prepare_shapes

from segcli.data.prepare import build_dataset
from segcli.data.prepare_worker import init_worker
from segcli.errors import DataError, Interrupted, OutputError, ResourceError, UsageError


def raw_folder(root: Path, count: int = 4, side: int = 16) -> Path:
    """root/raw/{images,masks} with `count` pairs, a README and a classes.json beside them."""
    raw = root / "raw"
    for i in range(count):
        save(raw / "images" / f"s{i:03d}.png", noise(side, side, i))
        save(raw / "masks" / f"s{i:03d}.png", np.where(blob(side, side, i), 255, 0).astype("u1"))
    (raw / "README.txt").write_text("my only copy")
    classes = [{"name": "background"}, {"name": "cell"}]
    (raw / "classes.json").write_text(json.dumps(classes))
    return raw


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 1. the output never overlaps an input; --force replaces only segcli's own datasets -------


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("raw/images", ["--force"], "is the input"),
        ("raw/masks", ["--force"], "is the input"),
        ("raw/images/x", [], "is inside the input folder"),
        ("raw/masks/deeper/x", [], "is inside the input folder"),
        ("raw", ["--force"], "contains the input"),
        (".", ["--force"], "contains the input"),
        ("link-to-images", ["--force"], "is the input"),
        ("link-to-images/x", [], "is inside the input folder"),
        ("raw/classes.json", ["--force", "--classes", "raw/classes.json"], "is the input"),
    ],
)
def test_output_overlapping_an_input_is_refused(run_cli, tmp_path, out, extra, message):
    raw = raw_folder(tmp_path)
    (tmp_path / "link-to-images").symlink_to(raw / "images")
    before = snapshot(raw)
    code, _, err = run_cli(
        "prepare", "folder", "raw/images", "--masks", "raw/masks", "--out", out, *extra
    )
    assert code == 2, err
    line = one_line(err)
    assert message in line and "choose an --out outside every input folder" in line
    assert snapshot(raw) == before
    assert not (raw / "images" / "x").exists() and not leftovers(tmp_path)


def test_plain_build_refuses_an_output_among_the_sample_files(tmp_path):
    raw = raw_folder(tmp_path)
    plan = prepare_folder(raw / "images", masks=raw / "masks", val_fraction=0)
    before = snapshot(raw)
    with pytest.raises(UsageError, match="is the input"):
        build_dataset(plan, raw / "masks", force=True, workers=1)
    with pytest.raises(UsageError, match="is inside the input folder"):
        build_dataset(plan, raw / "images" / "prepared", workers=1)
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "occupant",
    [
        {"notes.txt": "a user's file"},
        {"dataset.json": json.dumps({"name": "Task01", "labels": {"0": "background"}})},
        {"dataset.json": "not even json"},
    ],
)
def test_force_replaces_only_a_dataset_segcli_prepared(run_cli, tmp_path, occupant):
    raw = raw_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for name, text in occupant.items():
        (other / name).write_text(text)
    before = snapshot(other)
    code, _, err = run_cli(
        "prepare", "folder", raw / "images", "--masks", raw / "masks", "--out", other, "--force"
    )
    assert code == 6, err
    assert "not a dataset prepared by segcli" in one_line(err)
    assert snapshot(other) == before and not leftovers(tmp_path)


def test_force_replaces_a_prepared_dataset_or_an_empty_folder(run_cli, tmp_path):
    raw = raw_folder(tmp_path)
    out = tmp_path / "prepared"
    out.mkdir()
    args = ("prepare", "folder", raw / "images", "--masks", raw / "masks", "--out", out)
    assert run_cli(*args)[0] == 6
    assert run_cli(*args, "--force")[0] == 0
    assert run_cli(*args, "--force", "--val-fraction", "0.5")[0] == 0
    assert json.loads((out / "dataset.json").read_text())["splits"] == {"train": 2, "val": 2}
    assert not leftovers(tmp_path)


# --- 2. binary masks: each mask by its own two levels ------------------------------------------


def palette_mask(mask: np.ndarray) -> Image.Image:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * (254 * 3))
    return image


def mixed_masks(tmp_path: Path) -> tuple[Path, Path]:
    """img0, img1: greyscale 0/255; img2, img3: palette indices 0/1."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(4):
        save(images / f"img{i}.png", noise(16, 16, i))
        foreground = blob(16, 16, i)
        masks.mkdir(exist_ok=True)
        if i < 2:
            save(masks / f"img{i}.png", np.where(foreground, 255, 0).astype(np.uint8))
        else:
            palette_mask(foreground).save(masks / f"img{i}.png")
    return images, masks


def test_binary_encoding_keeps_the_foreground_of_every_mask(tmp_path):
    images, masks = mixed_masks(tmp_path)
    with pytest.raises(DataError, match="mix palette images and others"):
        prepare_folder(images, masks=masks)
    plan = prepare_folder(images, masks=masks, encoding="binary", val_fraction=0)
    build_dataset(plan, tmp_path / "out", workers=1)
    for i in range(4):
        written = np.asarray(Image.open(tmp_path / "out" / "train" / "masks" / f"img{i}.png"))
        assert np.array_equal(written, blob(16, 16, i)), f"img{i}"


@pytest.mark.parametrize(
    ("bad_mask", "message"),
    [
        (np.tile(np.array([0, 1, 2, 3], np.uint8), (16, 4)), "holds 4 values (0, 1, 2, 3), not"),
        (np.full((16, 16), 7, np.uint8), "holds the single value 7: background or foreground"),
    ],
)
def test_binary_encoding_refuses_a_mask_it_cannot_decide(tmp_path, bad_mask, message):
    images, masks = mixed_masks(tmp_path)
    save(masks / "img3.png", bad_mask)
    plan = prepare_folder(images, masks=masks, encoding="binary", val_fraction=0)
    with pytest.raises(DataError, match="dataset folder: mask ") as error:
        build_dataset(plan, tmp_path / "out", workers=1)
    assert str(masks / "img3.png") in str(error.value) and message in str(error.value)
    assert not (tmp_path / "out").exists()


# --- 9. a full disk stops prepare at once, with the storage exit code --------------------------


def shapes_plan(count: int):
    return prepare_shapes(None, train=count, val=0, size=32)


def disk_full_after(monkeypatch, writes_allowed: int) -> list[Path]:
    """Make every file write after the first `writes_allowed` fail with ENOSPC."""
    attempts: list[Path] = []
    real_write = Path.write_bytes

    def write_bytes(path: Path, data: bytes) -> int:
        attempts.append(path)
        if len(attempts) > writes_allowed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return attempts


def test_disk_full_stops_at_the_first_failed_write(tmp_path, monkeypatch):
    out = tmp_path / "shapes"
    build_dataset(shapes_plan(3), out, workers=1)
    before = snapshot(out)
    attempts = disk_full_after(monkeypatch, writes_allowed=5)
    with pytest.raises(ResourceError, match="disk full writing") as error:
        build_dataset(shapes_plan(20), out, force=True, workers=1)
    assert len(attempts) == 6  # no sample was tried after the failed write
    assert f"nothing was written, {out} is unchanged" in str(error.value)
    assert snapshot(out) == before and not leftovers(tmp_path)


def test_disk_full_in_a_worker_stops_the_pool(tmp_path, monkeypatch):
    log = tmp_path / "attempts.log"

    def slow_full_disk(path: Path, data: bytes) -> int:
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(descriptor, b".")
        os.close(descriptor)
        time.sleep(0.1)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Path, "write_bytes", slow_full_disk)  # the forked workers inherit it
    with pytest.raises(ResourceError, match="disk full writing"):
        build_dataset(shapes_plan(160), tmp_path / "shapes", workers=2)
    # 16 chunks of 10 samples; each chunk stops at its first write. Left to finish its queue,
    # the pool tries about 7 chunks; stopped, only those under way when the first failure came.
    assert len(log.read_bytes()) <= 4
    assert not (tmp_path / "shapes").exists() and not leftovers(tmp_path)


def test_other_write_failures_are_output_errors(tmp_path, monkeypatch):
    def denied(path: Path, data: bytes) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(Path, "write_bytes", denied)
    with pytest.raises(OutputError, match="permission denied"):
        build_dataset(shapes_plan(3), tmp_path / "shapes", workers=1)
    assert not leftovers(tmp_path)


def segcli_process(*args: str, cwd: Path, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segcli", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=takes_ctrl_c(options.pop("preexec_fn", None)),
        **options,
    )


def test_file_size_limit_exits_with_the_storage_code(tmp_path):
    out = tmp_path / "prepared"
    raw = raw_folder(tmp_path, count=12, side=64)  # each image is about 12 KiB
    args = ("prepare", "folder", raw / "images", "--masks", raw / "masks", "--out", out)
    assert segcli_process(*args, cwd=tmp_path).wait(timeout=120) == 0
    before = snapshot(out)

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    process = segcli_process(
        *args, "--force", "--workers", "2", cwd=tmp_path, preexec_fn=small_files_only
    )
    _, err = process.communicate(timeout=120)
    assert process.returncode == 7, err
    line = one_line(err)
    assert "file too large" in line and f"{out} is unchanged" in line
    assert snapshot(out) == before and not leftovers(tmp_path)


# --- 12, 16. Ctrl-C and SIGKILL: nothing half-written, no orphan workers ------------------------


def interrupt_after(samples: int):
    def progress(done: int, total: int) -> None:
        if done == samples:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_keeps_the_previous_dataset(tmp_path, workers):
    out = tmp_path / "shapes"
    build_dataset(shapes_plan(3), out, workers=1)
    before = snapshot(out)
    with pytest.raises(Interrupted, match=f"interrupted; nothing was written, {out} is unchanged"):
        build_dataset(
            shapes_plan(40), out, force=True, workers=workers, progress=interrupt_after(5)
        )
    assert snapshot(out) == before and not leftovers(tmp_path)
    with pytest.raises(Interrupted, match="was not created"):
        build_dataset(
            shapes_plan(40), tmp_path / "new", workers=workers, progress=interrupt_after(5)
        )
    assert not (tmp_path / "new").exists() and not leftovers(tmp_path)


def test_workers_leave_ctrl_c_to_the_prepare_process(tmp_path):
    """A worker interrupted while idle would print its traceback; the parent stops the pool."""
    initargs = (shapes_plan(1), tmp_path, os.getpid())
    with ProcessPoolExecutor(1, initializer=init_worker, initargs=initargs) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_workers(process: subprocess.Popen, count: int = 2) -> set[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        workers = children(process.pid)
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    pytest.fail(f"prepare started no {count} workers: {process.communicate()}")


def gone_within(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(running(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


LONG_SHAPES = ("prepare", "shapes", "--train", "3000", "--val", "0", "--size", "64")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_leaves_no_workers_and_no_temporary_folder_in_the_way(tmp_path):
    out = tmp_path / "shapes"
    process = segcli_process(*LONG_SHAPES, "--workers", "2", "--out", out, cwd=tmp_path)
    workers: set[int] = set()
    try:
        workers = wait_for_workers(process)
        process.kill()
        process.wait(timeout=30)
        assert gone_within(workers, 5), "workers outlived the killed prepare"
    finally:
        kill_all(workers)
        process.communicate(timeout=30)  # workers that lived on held its output open
    assert leftovers(tmp_path)  # the killed run could not tidy up: the next one must
    again = segcli_process(
        "prepare", "shapes", "--train", "3", "--val", "0", "--out", out, cwd=tmp_path
    )
    assert again.wait(timeout=120) == 0
    assert not leftovers(tmp_path) and (out / "dataset.json").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_exits_130_with_one_line_and_keeps_the_previous_dataset(tmp_path):
    out = tmp_path / "shapes"
    first = segcli_process("prepare", "shapes", "--train", "3", "--out", out, cwd=tmp_path)
    assert first.wait(timeout=120) == 0
    before = snapshot(out)
    process = segcli_process(
        *LONG_SHAPES,
        "--workers",
        "2",
        "--out",
        out,
        "--force",
        cwd=tmp_path,
        start_new_session=True,
    )
    workers: set[int] = set()
    try:
        workers = wait_for_workers(process)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert one_line(err).endswith(f"interrupted; nothing was written, {out} is unchanged")
        assert gone_within(workers, 5)
    finally:
        kill_all(workers)
        if process.poll() is None:
            process.kill()
    assert snapshot(out) == before and not leftovers(tmp_path)


def test_a_dataset_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    out = tmp_path / "shapes"
    build_dataset(shapes_plan(3), out, workers=1)
    before = snapshot(out)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    os.replace(out, tmp_path / f".shapes.old-{dead.pid}")  # killed between the two renames
    (tmp_path / f".shapes.tmp-{dead.pid}").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        build_dataset(shapes_plan(5), out, workers=1)
    assert snapshot(out) == before and not leftovers(tmp_path)


# --- 17. messages that say what to do ----------------------------------------------------------


def test_unpaired_names_say_which_mask_was_expected_and_the_closest(tmp_path):
    raw = raw_folder(tmp_path)
    for mask in (raw / "masks").iterdir():
        mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
    with pytest.raises(DataError) as error:
        prepare_folder(raw / "images", masks=raw / "masks")
    message = str(error.value)
    assert "s000.png would need a mask named s000.<png|tif|...>" in message
    assert "closest mask names are s000_mask.png" in message and "--mask-suffix" in message


def test_a_wrong_mask_suffix_names_the_mask_it_looked_for(tmp_path):
    raw = raw_folder(tmp_path)
    with pytest.raises(DataError) as error:
        prepare_folder(raw / "images", masks=raw / "masks", mask_suffix="_mask")
    message = str(error.value)
    assert "s000.png would need a mask named s000_mask.<png|tif|...>" in message
    assert "closest mask names are s000.png" in message


def test_empty_folders_say_what_to_pass(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("prepare", "isbi2012", "empty")
    assert code == 3 and "raw folder empty is empty (put the raw isbi2012 files there" in err
    raw = raw_folder(tmp_path)
    code, _, err = run_cli("prepare", "folder", raw / "images", "--masks", "empty")
    assert code == 3 and "no masks found in empty (pass the folder that holds the mask" in err
