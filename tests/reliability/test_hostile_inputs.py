"""Hostile inputs of issue 17: bit depths and float images read by one rule, damaged image
metadata, glob inputs through symlink loops, deeply nested JSON, split names that are files.

Each case reads, prepares or predicts the way a user would, and expects the documented
result: the same pixel value whatever the other pixels hold, a one-line error naming the
file, every image predicted once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import check_error_output, image_bytes, shape_pair, write_raw_folder

from segcli.data.format import read_dataset_info
from segcli.data.images import open_image, read_image
from segcli.data.split_file import read_split_file
from segcli.errors import ConfigError, DataError
from segcli.inference.input_files import discover_inputs
from segcli.json_files import parse_json, read_json

PARTIAL, DATA, USAGE = 8, 3, 2

# ------------------------------------------------------------------ one image-reading rule


def save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_pixel_reads_the_same_whatever_the_other_pixels_hold(tmp_path, suffix):
    """A 16-bit value is scaled by 65535, never by the largest value of its own image."""
    dim = np.zeros((4, 4), np.uint16)
    dim[0, 0] = 200
    bright = dim.copy()
    bright[0, 1], bright[3, 3] = 51400, 65535  # 51400 = 200 * 257
    for array in (dim, bright):
        pixels = read_image(save(array, tmp_path / f"{array.max()}{suffix}"), channels=1)
        assert pixels[0, 0, 0] == 1  # round(200 / 65535 * 255)
    assert pixels[0, 1, 0] == 200 and pixels[3, 3, 0] == 255


def test_integer_tiffs_scale_by_their_types_full_range(tmp_path):
    """Pillow widens 16-bit signed and 32-bit samples to its 32-bit mode I; the file's own
    sample type decides the range."""
    int32 = np.array([[-(2**31), 0, 2**31 - 1]], np.int32)
    pixels = read_image(save(int32, tmp_path / "int32.tif"), channels=1)[..., 0]
    assert pixels.tolist() == [[0, 128, 255]]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 100.0, 255.0], [0, 100, 255]), ([0.0, 0.5, 1.0], [0, 128, 255])],
    ids=["0-255", "0-1"],
)
def test_float_images_hold_0_to_1_or_0_to_255(tmp_path, values, expected):
    image = save(np.array([values], np.float32), tmp_path / "float.tif")
    assert read_image(image, channels=1)[..., 0].tolist() == [expected]
    assert read_image(image, channels=3)[0, :, 1].tolist() == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "-1"), (300.0, "300")],
)
def test_float_images_outside_the_rule_are_data_errors_naming_the_file(tmp_path, value, message):
    image = save(np.array([[0.0, value, 1.0]], np.float32), tmp_path / "odd.tif")
    with pytest.raises(DataError, match=message) as caught:
        read_image(image)
    assert str(image) in str(caught.value)


def test_prepare_and_the_fingerprint_read_16_bit_images_by_the_rule(tmp_path, segcli_in_process):
    """The prepared dataset keeps the 16-bit file; what the trainer measures of it is the
    value / 65535, whatever else the image holds."""
    images, masks = write_raw_folder(tmp_path / "raw", 2)
    dim = np.full((24, 24), 200, np.uint16)  # 200 / 65535 -> 1 / 255
    bright = np.full((24, 24), 13107, np.uint16)  # 13107 / 65535 = 0.2 = 51 / 255
    bright[0, 0] = 65535
    for path, grey in zip(sorted(images.iterdir()), (dim, bright), strict=True):
        path.unlink()
        save(grey, path.with_suffix(".tif"))
    expected = (1 / 255 + (51 * 575 + 255) / 576 / 255) / 2
    result = segcli_in_process(
        "prepare", "folder", images, "--masks", masks, "--out", "ds", "--workers", "1",
        "--val-fraction", "0", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    fingerprint = json.loads((tmp_path / "ds" / "fingerprint.json").read_text())
    assert fingerprint["mean"][0] == pytest.approx(expected, abs=1e-4)


# -------------------------------------------------------------- damaged image metadata

DAMAGED = ["webp-exif-type", "webp-exif-struct", "tiff-bad-tag"]


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_metadata_is_a_data_error_naming_the_file(tmp_path, kind):
    suffix, content = image_bytes(kind)
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(content)
    for read in (read_image, open_image):
        with pytest.raises(DataError, match="cannot read image") as caught:
            read(path)
        assert str(path) in str(caught.value)


@pytest.fixture
def images_with_damaged_ones(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        save(shape_pair(index)[0], folder / f"good{index}.png")
    for kind in DAMAGED:
        suffix, content = image_bytes(kind)
        (folder / f"{kind}{suffix}").write_bytes(content)
    return folder


def test_predict_lists_the_damaged_files_and_writes_the_good_ones(
    images_with_damaged_ones, tiny_run, tmp_path, segcli_in_process
):
    checkpoint = tiny_run / "best.safetensors"
    result = segcli_in_process(
        "predict", images_with_damaged_ones, "--checkpoint", checkpoint, "--out", "pred",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == PARTIAL, result.stderr
    line = check_error_output(result.stderr)
    assert f"{len(DAMAGED)} of {len(DAMAGED) + 2}" in line
    for kind in DAMAGED:
        assert kind in result.stderr
    written = sorted(p.name for p in (tmp_path / "pred").iterdir() if not p.name.startswith("."))
    assert written == ["good0.png", "good1.png"]


@pytest.mark.parametrize("kind", DAMAGED)
def test_prepare_refuses_a_damaged_image_in_one_line(tmp_path, segcli_in_process, kind):
    images, masks = write_raw_folder(tmp_path / "raw", 3)
    suffix, content = image_bytes(kind)
    (images / "s000.png").unlink()
    (images / f"s000{suffix}").write_bytes(content)
    result = segcli_in_process(
        "prepare", "folder", images, "--masks", masks, "--out", "ds", "--workers", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == DATA, result.stderr
    assert f"s000{suffix}" in check_error_output(result.stderr)
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------- glob inputs and links


def _linked_folders(root: Path) -> dict[str, Path]:
    """Folders whose links lead back up: one self-link, three self-links (3^40 paths for a
    glob that follows them), and three folders linked in a ring."""
    image = shape_pair(0)[0]
    one, many, ring = root / "one", root / "many", root / "ring"
    for folder in (one, many, ring / "a", ring / "b", ring / "c"):
        folder.mkdir(parents=True)
        save(image, folder / "x.png")
    os.symlink(".", one / "self")
    for index in range(3):
        os.symlink(".", many / f"self{index}")
    for here, there in (("a", "b"), ("b", "c"), ("c", "a")):
        os.symlink(f"../{there}", ring / here / "next")
    return {"one": one, "many": many, "ring": ring}


def test_a_recursive_glob_predicts_each_image_once_through_link_loops(tmp_path):
    """Run apart, so that a glob that follows the loops fails this test instead of hanging it."""
    folders = _linked_folders(tmp_path)
    script = textwrap.dedent(
        """
        import json, sys
        from segcli.inference.input_files import discover_inputs
        found = {
            name: sorted(str(relative) for _, relative in discover_inputs([f"{root}/**/*.png"]))
            for name, root in json.loads(sys.argv[1]).items()
        }
        print(json.dumps(found))
        """
    )
    argument = json.dumps({name: str(path) for name, path in folders.items()})
    done = subprocess.run(
        [sys.executable, "-c", script, argument], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "one": ["x.png"],
        "many": ["x.png"],
        "ring": ["a/x.png", "b/x.png", "c/x.png"],
    }


def test_linked_folders_inside_a_glob_are_still_read_where_the_pattern_names_them(tmp_path):
    """Only `**` stays out of linked folders; a link the pattern itself names is followed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    save(shape_pair(0)[0], elsewhere / "y.png")
    (tmp_path / "data").mkdir()
    os.symlink(elsewhere, tmp_path / "data" / "linked")
    found = discover_inputs([f"{tmp_path}/data/*/*.png"])
    assert [path for path, _ in found] == [tmp_path / "data" / "linked" / "y.png"]


def test_the_same_file_given_twice_or_through_a_link_is_predicted_once(tmp_path):
    image = save(shape_pair(0)[0], tmp_path / "a.png")
    os.symlink("a.png", tmp_path / "b.png")
    found = discover_inputs([image, image, tmp_path / "b.png", tmp_path])
    assert [str(relative) for _, relative in found] == ["a.png"]


# ------------------------------------------------------------------------ nested JSON


def _deep(levels: int) -> str:
    return '{"train": ' + "[" * levels + "]" * levels + "}"


def test_deeply_nested_json_in_a_split_file_is_a_usage_error(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(_deep(100_000))
    with pytest.raises(ConfigError, match="nested") as caught:
        read_split_file(path)
    assert str(path) in str(caught.value)


def test_deeply_nested_json_in_dataset_json_is_a_data_error(tmp_path):
    (tmp_path / "dataset.json").write_text(_deep(100_000))
    with pytest.raises(DataError, match="nested") as caught:
        read_dataset_info(tmp_path)
    assert "dataset.json" in str(caught.value)


def test_the_json_helpers_name_the_source_and_raise_the_given_error(tmp_path):
    with pytest.raises(ConfigError, match="config of x.safetensors"):
        parse_json("[" * 100_000, "config of x.safetensors", ConfigError)
    # parsed, but deep enough that a later recursive walk could hit the recursion limit
    with pytest.raises(DataError, match="nested deeper than 100 levels"):
        parse_json(_deep(150), "split.json")
    assert isinstance(parse_json(_deep(99), "split.json")["train"], list)  # 100 levels
    assert parse_json(b'{"a": [1, {"b": null}]}', "bytes") == {"a": [1, {"b": None}]}
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"caf\xe9": 1}')
    with pytest.raises(DataError, match="latin1.json"):
        read_json(path, "the report")
