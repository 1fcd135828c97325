"""The preparers on the real raw datasets in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json

import pytest
from raw_images import SHARED_DATA

from segcli.data.prepare import build_dataset

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not there"),
]


def test_isbi2012_png(tmp_path):
    from segcli_datasets.isbi2012 import prepare

    report = build_dataset(prepare(SHARED_DATA / "isbi2012" / "png"), tmp_path / "isbi")
    assert report.pairs == {"train": 27, "val": 3} and report.unlabelled == {"test": 30}
    assert report.raw_values["train"] == [0, 255]
    assert 0.20 < report.class_share["train"]["membrane"] < 0.24


def test_tgs_salt_all_pairs(tmp_path):
    from segcli_datasets.tgs_salt import prepare

    report = build_dataset(prepare(SHARED_DATA / "tgs-salt"), tmp_path / "tgs")
    assert report.pairs == {"train": 3400, "val": 600} and report.unlabelled == {"test": 100}
    assert "empty masks (no salt, per train.csv): 1562 of 4000" in report.notes
    assert set(report.raw_values["train"]) <= {0, 255, 65535}
    assert 0.2 < report.class_share["train"]["salt"] < 0.3
    record = json.loads((tmp_path / "tgs" / "samples.jsonl").read_text().splitlines()[0])
    assert 50 <= record["meta"]["depth"] <= 959


def test_idd_lite(tmp_path):
    from segcli_datasets.idd_lite import prepare

    report = build_dataset(prepare(SHARED_DATA / "idd-lite"), tmp_path / "idd")
    assert report.pairs == {"train": 1403, "val": 204} and report.unlabelled == {"test": 404}
    assert report.raw_values["train"] == [0, 1, 2, 3, 4, 5, 6, 255]
    assert 0 < report.class_share["train"]["(ignore)"] < 0.001


def test_drive_through_folder(tmp_path):
    from segcli_datasets.folder import prepare

    drive = SHARED_DATA / "drive" / "DRIVE" / "training"
    plan = prepare(drive / "images", masks=drive / "1st_manual", key=r"^\d+", val_fraction=0.2)
    assert "detected: binary" in plan.notes[0]
    report = build_dataset(plan, tmp_path / "drive")
    assert report.pairs == {"train": 16, "val": 4}
    assert 0.07 < report.class_share["train"]["foreground"] < 0.10
    assert all(p.suffix == ".tif" for p in (tmp_path / "drive" / "train" / "images").iterdir())


def test_drive_second_observer_palette_gifs(tmp_path):
    from segcli_datasets.folder import prepare

    drive = SHARED_DATA / "drive" / "DRIVE" / "test"
    plan = prepare(drive / "images", masks=drive / "2nd_manual", key=r"^\d+")
    assert "detected: palette" in plan.notes[0]
    report = build_dataset(plan, tmp_path / "drive2")
    assert report.raw_values["train"] == [0, 1]  # palette indices, not the grey 3/253
