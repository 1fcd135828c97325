"""The dataset fingerprint: known answers on tiny prepared datasets, and fingerprint.json as
derived data (written by prepare, computed on first use, recomputed when damaged)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import noise, save

import segcli.files
from segcli.data.fingerprint import (
    FINGERPRINT_FILE,
    FINGERPRINT_VERSION,
    Fingerprint,
    compute_fingerprint,
    load_fingerprint,
)
from segcli.data.format import ClassInfo
from segcli.data.plan import DatasetPlan, Sample
from segcli.data.prepare import build_dataset
from segcli.ledger import OutputLedger

CLASSES = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "thing", (255, 255, 255))]


def near(value: float):
    """fingerprint.json keeps six significant digits."""
    return pytest.approx(value, rel=1e-5)


def read_saved_mask(sample: Sample) -> np.ndarray:
    return np.asarray(Image.open(sample.mask))


def prepared(
    tmp_path: Path,
    masks: list[np.ndarray | None],
    images: list[np.ndarray] | None = None,
    *,
    channels: int = 3,
    classes: list[ClassInfo] = CLASSES,
) -> Path:
    """A prepared dataset whose train split holds these images (noise by default) and masks
    (None: an image without a mask)."""
    raw = tmp_path / "raw"
    samples = []
    for index, mask in enumerate(masks):
        if images is not None:
            image = images[index]
        else:
            height, width = mask.shape if mask is not None else (6, 6)
            image = noise(height, width, seed=index, channels=channels)
        stem = f"s{index:02d}"
        mask_path = save(raw / "masks" / f"{stem}.png", mask) if mask is not None else None
        samples.append(
            Sample("train", stem, save(raw / "images" / f"{stem}.png", image), mask_path)
        )
    plan = DatasetPlan("tiny", classes, samples, read_mask=read_saved_mask, image_channels=channels)
    out = tmp_path / "prepared"
    build_dataset(plan, out, workers=1)
    return out


def by_name(fingerprint: Fingerprint) -> dict:
    return {c.name: c for c in fingerprint.classes}


def test_a_class_covering_a_quarter(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :4] = 1
    found = compute_fingerprint(prepared(tmp_path, [mask, mask]))
    thing, background = by_name(found)["thing"], by_name(found)["background"]
    assert thing.pixel_share == 0.25 and background.pixel_share == 0.75
    assert thing.image_share == 1.0
    assert thing.median_object_area == 0.25 and thing.pixel_weighted_object_area == 0.25
    assert thing.top_share == 1.0 and thing.left_share == 1.0
    assert background.top_share == near(1 / 3) and background.left_share == near(1 / 3)
    assert found.images_measured == 2 and found.splits == {"train": 2}


def test_objects_of_known_area_with_8_connectivity(tmp_path):
    one = np.zeros((10, 10), np.uint8)
    one[2:5, 2:7] = 1  # 15 pixels
    two = np.zeros((10, 10), np.uint8)
    two[0:2, 0:2] = 1  # 4 pixels, touching the next square only at a corner: one object of 8
    two[2:4, 2:4] = 1
    two[6:9, 6:9] = 1  # 9 pixels
    empty = np.zeros((10, 10), np.uint8)
    thing = by_name(compute_fingerprint(prepared(tmp_path, [one, two, empty])))["thing"]
    # components 0.15, 0.08, 0.09: median 0.09; by pixel, 15 of 32 pixels lie in the 0.15 one
    # and 17 in smaller ones, so the middle pixel lies in the 0.09 one
    assert thing.median_object_area == near(0.09)
    assert thing.pixel_weighted_object_area == near(0.09)
    assert thing.image_share == near(2 / 3)
    assert thing.pixel_share == near(32 / 300)


def test_pixel_weighted_area_is_not_moved_by_specks(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[10:20, 10:20] = 1  # one object of 100 pixels
    for y in range(0, 8, 2):
        mask[y, 0] = mask[y, 4] = 1  # eight specks of one pixel
    thing = by_name(compute_fingerprint(prepared(tmp_path, [mask])))["thing"]
    assert thing.median_object_area == near(1 / 400)
    assert thing.pixel_weighted_object_area == near(100 / 400)


def test_top_heavy_class_and_middle_row_counting_half(tmp_path):
    top = np.zeros((5, 6), np.uint8)
    top[0:2, :] = 1
    middle = np.zeros((5, 6), np.uint8)
    middle[2, :] = 1
    assert by_name(compute_fingerprint(prepared(tmp_path / "a", [top])))["thing"].top_share == 1.0
    thing = by_name(compute_fingerprint(prepared(tmp_path / "b", [middle])))["thing"]
    assert thing.top_share == 0.5 and thing.left_share == 0.5


def test_grey_and_rgb_intensity(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    grey = np.full((4, 4), 51, np.uint8)
    found = compute_fingerprint(prepared(tmp_path / "grey", [mask], [grey], channels=1))
    assert found.channels == 1
    assert found.mean == (0.2,) and found.std == (0.0,)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, :, 0] = 255
    rgb[:2, :, 1] = 255  # half black, half white: std 0.5
    found = compute_fingerprint(prepared(tmp_path / "rgb", [mask], [rgb]))
    assert found.channels == 3
    assert found.mean == (1.0, 0.5, 0.0) and found.std == (0.0, 0.5, 0.0)


def test_sizes_vary_and_ignored_pixels_do_not_count(tmp_path):
    masks = []
    for height, width in ((8, 10), (12, 6), (20, 4)):
        mask = np.zeros((height, width), np.uint8)
        mask[0, 0] = 1
        mask[-1, :] = 255
        masks.append(mask)
    found = compute_fingerprint(prepared(tmp_path, masks))
    assert (found.height.median, found.height.min, found.height.max) == (12, 8, 20)
    assert (found.width.median, found.width.min, found.width.max) == (6, 4, 10)
    labelled = (8 - 1) * 10 + (12 - 1) * 6 + (20 - 1) * 4
    assert by_name(found)["thing"].pixel_share == near(3 / labelled)


def test_absent_class_and_image_without_mask(tmp_path):
    classes = [*CLASSES, ClassInfo(2, "never", (0, 0, 255))]
    mask = np.zeros((6, 6), np.uint8)
    found = compute_fingerprint(prepared(tmp_path, [mask, None], classes=classes))
    never = by_name(found)["never"]
    assert never.pixel_share == 0.0 and never.image_share == 0.0
    assert never.median_object_area is None and never.top_share is None
    assert by_name(found)["background"].image_share == 1.0  # of the one image with a mask
    assert found.images_measured == 2


def test_an_evenly_spaced_sample_of_large_sets(tmp_path):
    masks = [np.zeros((height, 4), np.uint8) for height in (1, 2, 3, 4, 5)]
    root = prepared(tmp_path, masks)
    found = compute_fingerprint(root, max_images=2)
    assert found.images_measured == 2
    assert (found.height.min, found.height.max) == (1, 3)  # images 0 and 2 of 5
    assert compute_fingerprint(root, max_images=2) == found


# --- fingerprint.json: written by prepare, derived data on first use --------------------------


def test_prepare_writes_it(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[:3] = 1
    root = prepared(tmp_path, [mask])
    written = Fingerprint.from_dict(json.loads((root / FINGERPRINT_FILE).read_text()))
    assert written == compute_fingerprint(root)
    assert written.version == FINGERPRINT_VERSION


def test_cli_prepare_writes_it_and_says_so(run_cli, tmp_path):
    code, out, err = run_cli(
        "prepare", "shapes", "--train", "4", "--val", "2", "--size", "32", "--out", "shapes"
    )
    assert code == 0, err
    assert (tmp_path / "shapes" / FINGERPRINT_FILE).is_file()
    assert "fingerprint: 32x32 x3" in out


def test_computed_and_written_when_missing(tmp_path):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    expected = compute_fingerprint(root)
    (root / FINGERPRINT_FILE).unlink()
    assert load_fingerprint(root) == expected
    assert Fingerprint.from_dict(json.loads((root / FINGERPRINT_FILE).read_text())) == expected


@pytest.mark.parametrize(
    "damage",
    [
        "{not json",
        '{"version": 1, "splits": {}}',
        '{"version": 0, "splits": {"train": 1}}',
        "[1, 2]",
        "\xff\xfe",
    ],
    ids=["torn", "missing-fields", "older-version", "not-an-object", "not-utf8"],
)
def test_recomputed_when_damaged_or_older(tmp_path, damage):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    expected = compute_fingerprint(root)
    (root / FINGERPRINT_FILE).write_text(damage, encoding="latin-1")
    assert load_fingerprint(root) == expected
    assert json.loads((root / FINGERPRINT_FILE).read_text())["version"] == FINGERPRINT_VERSION


def test_recomputed_when_the_splits_changed(tmp_path):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    stale = json.loads((root / FINGERPRINT_FILE).read_text())
    stale["splits"], stale["channels"] = {"train": 99}, 7
    (root / FINGERPRINT_FILE).write_text(json.dumps(stale))
    assert load_fingerprint(root).channels == 3


def test_a_newer_version_is_not_overwritten(tmp_path):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    newer = json.dumps({"version": FINGERPRINT_VERSION + 1, "something": "new"})
    (root / FINGERPRINT_FILE).write_text(newer)
    assert load_fingerprint(root).version == FINGERPRINT_VERSION
    assert (root / FINGERPRINT_FILE).read_text() == newer


def test_recorded_in_the_folder_ledger_when_it_has_one(tmp_path):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    (root / FINGERPRINT_FILE).unlink()
    (root / OutputLedger.NAME).write_text("")
    load_fingerprint(root)
    assert OutputLedger(root).owns(root / FINGERPRINT_FILE)


def test_a_folder_that_cannot_be_written_gets_it_computed(tmp_path, monkeypatch):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    expected = compute_fingerprint(root)
    (root / FINGERPRINT_FILE).unlink()

    def refuse(folder):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr(segcli.files, "temporary_file", refuse)
    assert load_fingerprint(root) == expected
    assert not (root / FINGERPRINT_FILE).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_dataset_folder(tmp_path):
    root = prepared(tmp_path, [np.zeros((6, 6), np.uint8)])
    (root / FINGERPRINT_FILE).unlink()
    root.chmod(0o555)
    try:
        assert load_fingerprint(root).images_measured == 1
        assert not (root / FINGERPRINT_FILE).exists()
    finally:
        root.chmod(0o755)
