"""Messages that say what happened: each of these once said something else (a read-only file
system was "permission denied", a CPU machine's `predict --device cuda` suggested a training
setting, a path outside the folder was offered as a place to write, ...)."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest
from PIL import Image
from reliability_helpers import TINY_TRAIN, check_error_output, shape_pair, snapshot

pytestmark = pytest.mark.slow

USAGE, DATA, OUTPUT, RESOURCE = 2, 3, 6, 7


def _images(folder: Path, count: int = 1) -> Path:
    folder.mkdir()
    for index in range(count):
        Image.fromarray(shape_pair(index)[0]).save(folder / f"a{index}.png")
    return folder


def test_the_same_file_twice_is_predicted_once(tmp_path, tiny_run, segcli_in_process):
    images = _images(tmp_path / "images")
    result = segcli_in_process(
        "predict", "images/a0.png", "./images/a0.png", images / "a0.png",
        "--checkpoint", tiny_run, "--out", "pred", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "rename one of them" not in result.stderr
    assert [p.name for p in (tmp_path / "pred").glob("[!.]*")] == ["a0.png"]
    assert "predicted 1 image(s)" in result.stdout, result.stdout


def test_a_read_only_file_system_is_not_called_permission_denied(
    tmp_path, tiny_run, segcli_in_process, monkeypatch
):
    """A folder on a read-only mount: `os.access` says no and statvfs has ST_RDONLY (what a
    `mount -o ro` gives, emulated: tests cannot mount)."""
    _images(tmp_path / "images")
    out = tmp_path / "mounted"
    out.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    def access(path, mode, *args, **kwargs):
        if Path(path) == out and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly() if Path(p) == out else real_statvfs(p))
    result = segcli_in_process(
        "predict", "images", "--checkpoint", tiny_run, "--out", out, cwd=tmp_path
    )
    assert result.exit_code == OUTPUT, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "read-only file system" in line and "permission denied" not in line, line
    assert "--out" in line, line


@pytest.mark.parametrize(
    "code, exit_code, words",
    [
        (errno.ENOSPC, RESOURCE, "disk full writing"),
        (errno.EDQUOT, RESOURCE, "disk quota exceeded writing"),
        (errno.EFBIG, RESOURCE, "file too large writing"),
        (errno.EROFS, OUTPUT, "read-only file system"),
        (errno.EACCES, OUTPUT, "permission denied"),
    ],
)
def test_each_failed_write_in_its_own_words(code, exit_code, words):
    from segcli.files import write_error

    error = write_error("out/mask.png", OSError(code, os.strerror(code)))
    assert error.exit_code == exit_code
    assert words in str(error) and "out/mask.png" in str(error) and error.hint


def test_predict_on_a_machine_without_cuda_suggests_its_own_option(
    tmp_path, tiny_run, segcli_in_process, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _images(tmp_path / "images")
    result = segcli_in_process(
        "predict", "images", "--checkpoint", tiny_run, "--device", "cuda", "--out", "pred",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == USAGE, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "--device cpu" in line and "train.device" not in line, line


def test_a_dataset_path_outside_is_not_offered_as_prepare_out(tmp_path, segcli_in_process):
    outside = f"../../segcli-not-there-{uuid.uuid4().hex}"
    assert not (tmp_path / outside).exists()
    work = tmp_path / "work"
    work.mkdir()
    result = segcli_in_process(
        "train", "--plugin", "shapes-unet", "--set", 'dataset.name="folder"',
        "--set", f'dataset.path="{outside}"', *TINY_TRAIN, cwd=work,
    )  # fmt: skip
    assert result.exit_code == DATA, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    hint = line.rpartition("(")[2]
    assert "../" not in hint and "--out data/folder" in hint, line
    assert "dataset.path=data/folder" in hint, line
    assert list(work.iterdir()) == []


def test_config_given_a_folder_says_so(tmp_path, tiny_run, segcli_in_process):
    before = snapshot(tmp_path)
    result = segcli_in_process("train", "--config", tiny_run, cwd=tmp_path)
    assert result.exit_code == USAGE, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "is a folder" in line and "does not exist" not in line, line
    assert str(tiny_run / "config.toml") in line, line
    assert snapshot(tmp_path) == before


def test_an_unknown_name_reads_as_one_sentence(tmp_path, segcli_in_process):
    result = segcli_in_process(
        "train", "--plugin", "shapes-unet", "--set", 'loss.name="x"', *TINY_TRAIN, cwd=tmp_path
    )
    assert result.exit_code == USAGE, f"exit {result.exit_code}\n{result.stderr}"
    line = check_error_output(result.stderr)
    assert "unknown loss 'x'; valid losses: " in line, line
