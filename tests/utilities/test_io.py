"""The shared image reader and file writers: size limits, disk full, temporary names, ledger."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli import files
from segcli.data import images
from segcli.errors import ConfigError, DataError, OutputError, ResourceError
from segcli.ledger import OutputLedger


def write_bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG of a few dozen bytes whose header claims `width` x `height` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def write_image(path: Path, size: int = 16, value: int = 0) -> Path:
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("side", [100_000, 15_000])
def test_a_decompression_bomb_header_is_a_data_error_naming_the_file(tmp_path, side):
    bomb = write_bomb_png(tmp_path / "bomb.png", side, side)
    with pytest.raises(DataError) as caught:
        images.read_image(bomb)
    message = str(caught.value)
    assert f"{bomb}" in message and f"{side}x{side}" in message
    assert "--max-image-pixels" in message and images.MAX_IMAGE_PIXELS_VARIABLE in message


def test_the_pixel_limit_is_segclis_in_both_directions(tmp_path, monkeypatch):
    image = write_image(tmp_path / "a.png", size=16)  # 256 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL alone would refuse it
    assert images.read_image(image).shape == (16, 16, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # PIL's own setting is left as it was
    with pytest.raises(DataError, match="over the limit of 255 pixels"):
        images.read_image(image, max_pixels=255)
    monkeypatch.setenv(images.MAX_IMAGE_PIXELS_VARIABLE, "255")
    with pytest.raises(DataError, match="over the limit of 255 pixels"):
        images.read_image(image)
    assert images.read_image(image, max_pixels=256).shape == (16, 16, 3)


@pytest.mark.parametrize("value", ["many", "0", "-5"])
def test_a_bad_pixel_limit_variable_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv(images.MAX_IMAGE_PIXELS_VARIABLE, value)
    with pytest.raises(ConfigError, match=images.MAX_IMAGE_PIXELS_VARIABLE):
        images.max_image_pixels()


def test_prepare_refuses_a_bomb_image_with_one_error_line(cli, tmp_path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    for index in range(3):
        write_image(raw / "images" / f"s{index}.png", value=index * 40)
        mask = (np.arange(256).reshape(16, 16) % 2 * 255).astype(np.uint8)
        Image.fromarray(mask).save(raw / "masks" / f"s{index}.png")
    write_bomb_png(raw / "images" / "s1.png", 15_000, 15_000)
    out = tmp_path / "ds"
    result = cli(
        "prepare",
        "folder",
        raw / "images",
        "--masks",
        raw / "masks",
        "--out",
        out,
        "--workers",
        "0",
    )
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "s1.png" in errors[0] and "15000x15000" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("code", "expected"),
    [(errno.ENOSPC, ResourceError), (errno.EDQUOT, ResourceError), (errno.EACCES, OutputError)],
)
def test_disk_full_is_a_resource_error_and_leaves_nothing(tmp_path, monkeypatch, code, expected):
    target = tmp_path / "out" / "mask.png"

    def refuse(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(expected) as caught:
        files.write_png_atomic(target, np.zeros((8, 8), np.uint8))
    assert type(caught.value) is expected
    if expected is ResourceError:
        words = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}[code]
        assert str(caught.value).startswith(f"{words} writing {target}")
        assert caught.value.exit_code == 7 and caught.value.hint
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_size_limit_gives_efbig_and_a_resource_error(tmp_path):
    """A real failed write: RLIMIT_FSIZE makes the kernel refuse it (Python ignores SIGXFSZ)."""
    target = tmp_path / "big.png"
    script = f"""
import resource, sys
import numpy as np
from segcli.files import write_png_atomic
from segcli.errors import SegcliError
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
try:
    write_png_atomic({str(target)!r}, noise)
except SegcliError as error:
    print(type(error).__name__, error)
    sys.exit(error.exit_code)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert result.stdout.startswith(f"ResourceError file too large writing {target}")
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_fit_wherever_the_final_name_fits(tmp_path):
    target = tmp_path / ("x" * 251 + ".png")  # 255 characters: the longest name allowed
    files.write_png_atomic(target, np.zeros((4, 4), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".segcli-{dead.stdout.strip()}-abcdefgh.tmp"
    live = tmp_path / f".segcli-{os.getpid()}-abcdefgh.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    files.remove_stale_temporaries(tmp_path)
    assert not stale.exists() and live.exists()


def test_the_ledger_knows_what_segcli_wrote_and_that_it_is_unchanged(tmp_path):
    ours, theirs = tmp_path / "sub" / "ours.png", tmp_path / "theirs.png"
    write_image(theirs)
    ledger = OutputLedger(tmp_path)
    files.write_png_atomic(ours, np.zeros((4, 4), np.uint8), ledger)
    again = OutputLedger(tmp_path)  # read back from the ledger file
    assert again.owns(ours) and not again.owns(theirs)
    again.check_replaceable([ours, tmp_path / "new.png"], force=False)
    with pytest.raises(OutputError, match="theirs.png"):
        again.check_replaceable([ours, theirs], force=False)
    again.check_replaceable([theirs], force=True)
    with (tmp_path / OutputLedger.NAME).open("a") as stream:
        stream.write('{"path": "sub/ours.p')  # torn by a crash mid-append
    ours.write_bytes(ours.read_bytes() + b"edited by hand")
    edited = OutputLedger(tmp_path)
    assert not edited.owns(ours)
    edited.compact()
    assert (tmp_path / OutputLedger.NAME).read_text() == ""


def test_predict_skips_a_bomb_and_unreadable_files_and_predicts_unusual_valid_ones(
    cli, trained_run, shapes_dataset, tmp_path
):
    """16-bit, palette, CMYK, grey+alpha are images; bomb, truncated, empty, text are not."""
    source = Image.open(sorted((shapes_dataset / "val" / "images").iterdir())[0]).convert("RGB")
    folder = tmp_path / "in"
    folder.mkdir()
    source.save(folder / "rgb.png")
    grey16 = np.asarray(source.convert("L"), np.uint16) * 257
    Image.fromarray(grey16).save(folder / "grey16.png")
    source.quantize(16).save(folder / "palette.png")
    source.convert("CMYK").save(folder / "cmyk.jpg")
    source.convert("LA").save(folder / "grey-alpha.png")
    write_bomb_png(folder / "bomb.png", 100_000, 100_000)
    (folder / "truncated.png").write_bytes((folder / "rgb.png").read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    out = tmp_path / "out"
    result = cli("predict", folder, "--out", out, "--checkpoint", trained_run, "--colorize")
    assert result.exit_code == 8, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    skipped = {"bomb.png", "truncated.png", "empty.png", "text.jpg"}
    assert len(warnings) == len(skipped)
    assert {name for name in skipped for line in warnings if f"/{name}:" in line} == skipped
    assert "over the limit of" in next(line for line in warnings if "bomb.png" in line)
    assert "4 of 9 image(s)" in result.stderr
    expected = np.asarray(Image.open(out / "rgb.png"))
    for stem in ("rgb", "grey16", "palette", "cmyk", "grey-alpha"):
        mask = np.asarray(Image.open(out / f"{stem}.png"))
        assert mask.shape == (64, 64) and Image.open(out / f"{stem}.color.png").mode == "RGB"
    assert (np.asarray(Image.open(out / "palette.png")) == expected).mean() > 0.9
    assert not list(out.glob("bomb*")) and not list(out.glob("*.tmp"))
