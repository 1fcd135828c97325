"""Damaged raw files given to the built-in preparers: a damaged image, a damaged page of a TIFF
volume or a damaged `--classes` file ends in one error line naming the file, and nothing is
written (issue 17, item 6)."""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import blob, noise, save

from segcli.data.plan import Sample
from segcli.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from reliability_helpers import check_error_output, image_bytes, temporaries  # noqa: E402


def refused(run_cli, tmp_path: Path, code: int, named: Path, *args: str) -> str:
    """Run `segcli prepare ARGS --out OUT`: exit `code`, one line naming `named`, no OUT."""
    out = tmp_path / "out"
    exit_code, _, err = run_cli("prepare", *args, "--out", out, "--workers", "1")
    line = check_error_output(err)
    assert exit_code == code, err
    assert str(named) in line, line
    assert not out.exists() and temporaries(tmp_path) == []
    return line


# -------------------------------------------------------------------- ISBI 2012 TIFF volumes


def _volume(pages: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    frames = [Image.fromarray(page) for page in pages]
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _damage_page(tiff: bytes, page: int, damage: str) -> bytes:
    """A little-endian TIFF whose page `page` (IFD number) is damaged: its strip points past the
    end of the file ("strip-offset"), or its BitsPerSample claims to be text ("bits-type")."""
    data = bytearray(tiff)
    (ifd,) = struct.unpack("<I", data[4:8])
    for _ in range(page):
        (count,) = struct.unpack("<H", data[ifd : ifd + 2])
        (ifd,) = struct.unpack("<I", data[ifd + 2 + 12 * count : ifd + 6 + 12 * count])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        (tag,) = struct.unpack("<H", data[entry : entry + 2])
        if damage == "strip-offset" and tag == 273:
            data[entry + 8 : entry + 12] = struct.pack("<I", len(data) + 4096)
        elif damage == "bits-type" and tag == 258:
            data[entry + 2 : entry + 4] = struct.pack("<H", 2)  # type ASCII
    return bytes(data)


@pytest.mark.parametrize("damage", ["strip-offset", "bits-type"])
@pytest.mark.parametrize("volume", ["train-volume.tif", "train-labels.tif"])
def test_isbi_a_damaged_page_of_a_volume_names_the_volume(run_cli, tmp_path, volume, damage):
    raw = tmp_path / "isbi"
    raw.mkdir()
    files = {
        "train-volume.tif": _volume([noise(32, 32, i, 1) for i in range(5)]),
        "train-labels.tif": _volume(
            [np.where(blob(32, 32, i), 0, 255).astype(np.uint8) for i in range(5)]
        ),
    }
    files[volume] = _damage_page(files[volume], 3, damage)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    line = refused(run_cli, tmp_path, 3, raw / volume, "isbi2012", raw)
    if damage == "strip-offset":  # a damaged tag breaks the chain of pages: counting them fails
        assert "page 3" in line


@pytest.mark.parametrize("kind", ["truncated-png", "tiff-bad-tag", "webp-exif-struct"])
def test_isbi_a_damaged_train_volume_names_it(run_cli, tmp_path, kind):
    raw = tmp_path / "isbi"
    raw.mkdir()
    (raw / "train-volume.tif").write_bytes(image_bytes(kind)[1])
    labels = [np.where(blob(32, 32, i), 0, 255).astype(np.uint8) for i in range(2)]
    (raw / "train-labels.tif").write_bytes(_volume(labels))
    refused(run_cli, tmp_path, 3, raw / "train-volume.tif", "isbi2012", raw)


def test_isbi_volume_pages_follow_the_one_image_rule(tmp_path):
    """A 16-bit volume's slices are images by segcli's rule (value / 65535), 8 bits each; its
    label pages keep their stored values."""
    from segcli_datasets.isbi2012 import read_volume_image, read_volume_mask

    pages = [np.full((4, 4), 257 * value, np.uint16) for value in (10, 200)]
    volume = tmp_path / "v.tif"
    volume.write_bytes(_volume(pages))
    sample = Sample("train", "01", None, (volume, 1), {"volume": str(volume), "page": 1})
    image = read_volume_image(sample)
    assert image.dtype == np.uint8 and (image == 200).all()
    assert (read_volume_mask(sample) == 257 * 200).all()


# ------------------------------------------- readers that only need an image's size (header)

HEADER_DAMAGE = ["zero-byte", "text-as-png"]


def _damaged_image(tmp_path: Path, kind: str) -> Path:
    suffix, data = image_bytes(kind)
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", HEADER_DAMAGE)
def test_labpics_read_mask_names_a_damaged_image(tmp_path, kind):
    from segcli_datasets.labpics import read_mask

    image = _damaged_image(tmp_path, kind)
    vessel = save(tmp_path / "vessel.png", np.zeros((24, 24), np.uint8))
    with pytest.raises(DataError, match="cannot read image") as caught:
        read_mask(Sample("train", "a", image, (vessel, None)))
    assert str(image) in str(caught.value)


@pytest.mark.parametrize("kind", HEADER_DAMAGE)
def test_tgs_rle_mask_names_a_damaged_image(tmp_path, kind):
    from segcli_datasets.tgs_salt import read_rle_mask

    image = _damaged_image(tmp_path, kind)
    table = tmp_path / "train.csv"
    with pytest.raises(DataError, match="cannot read image") as caught:
        read_rle_mask(Sample("train", "a", image, (table, "a")), rles={"a": "1 3"})
    assert str(image) in str(caught.value)


# ------------------------------------------------------------------- every preparer, by CLI


def _replace(path: Path, kind: str) -> Path:
    """`path` replaced by a damaged file of `kind` (with that kind's suffix)."""
    suffix, data = image_bytes(kind)
    path.unlink()
    damaged = path.with_suffix(suffix)
    damaged.write_bytes(data)
    return damaged


@pytest.mark.parametrize("kind", ["tiff-bad-tag", "webp-exif-struct"])
def test_every_preparer_names_a_damaged_image(
    run_cli, tmp_path, kind, labpics_raw, isbi_png_raw, idd_raw, tgs_raw, nyuv2_raw
):
    images = {
        "labpics": (labpics_raw, labpics_raw / "Simple" / "Train" / "Image" / "b.jpg"),
        "isbi2012": (isbi_png_raw, isbi_png_raw / "train" / "image" / "1.png"),
        "idd-lite": (idd_raw, next((idd_raw / "idd20k_lite" / "leftImg8bit").rglob("*.jpg"))),
        "tgs-salt": (tgs_raw, next((tgs_raw / "train" / "images").glob("*.png"))),
        "nyuv2": (nyuv2_raw, nyuv2_raw / "JPEGImages" / "0002.jpg"),
    }
    for name, (raw, image) in images.items():
        if name == "idd-lite":  # the pairing key ends in `_image.jpg`: keep the name
            image.write_bytes(image_bytes(kind)[1])
            damaged = image
        else:
            damaged = _replace(image, kind)
        refused(run_cli, tmp_path, 3, damaged, name, raw)


@pytest.mark.parametrize("kind", ["tiff-bad-tag", "webp-exif-struct"])
def test_every_preparer_names_a_damaged_mask(
    run_cli, tmp_path, kind, labpics_raw, isbi_png_raw, idd_raw, tgs_raw, nyuv2_raw
):
    masks = {
        "labpics": (labpics_raw, labpics_raw / "Simple/Train/Semantic/1_Vessel/b.png"),
        "isbi2012": (isbi_png_raw, isbi_png_raw / "train" / "label" / "2.png"),
        "idd-lite": (idd_raw, next((idd_raw / "idd20k_lite" / "gtFine").rglob("*.png"))),
        "tgs-salt": (tgs_raw, next((tgs_raw / "train" / "masks").glob("*.png"))),
        "nyuv2": (nyuv2_raw, nyuv2_raw / "Segmentation_40" / "0002.png"),
    }
    for name, (raw, mask) in masks.items():
        mask.write_bytes(image_bytes(kind)[1])  # the name is the pairing key: keep it
        refused(run_cli, tmp_path, 3, mask, name, raw)


# ---------------------------------------------------------------------- the --classes file


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000, b"[" * 150 + b"]" * 150, b'[{"name": "caf\xe9"}]', b'[{"name": }]'],
    ids=["deeper-than-the-recursion-limit", "nested-150-levels", "not-utf-8", "not-json"],
)
def test_folder_a_damaged_classes_file_is_a_usage_error(run_cli, tmp_path, content):
    images = save(tmp_path / "raw" / "images" / "a.png", noise(8, 8, 0)).parent
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    masks = save(tmp_path / "raw" / "masks" / "a.png", mask).parent
    classes = tmp_path / "classes.json"
    classes.write_bytes(content)
    line = refused(
        run_cli, tmp_path, 2, classes, "folder", images, "--masks", masks, "--classes", classes
    )
    assert "class list" in line
