"""The named preparers on generated raw layouts: through build_dataset and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import blob, save

from segcli.data.format import read_dataset_info
from segcli.data.prepare import build_dataset
from segcli.errors import DataError, UsageError


def masks_of(out: Path, split: str) -> dict[str, np.ndarray]:
    files = sorted((out / split / "masks").glob("*.png"))
    return {p.stem: np.asarray(Image.open(p)) for p in files}


def samples_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_registered_through_the_entry_point():
    from segcli.plugins import get_plugins

    datasets = get_plugins().datasets
    for name in ("labpics", "isbi2012", "idd-lite", "tgs-salt", "nyuv2", "folder"):
        entry = datasets.entry(name)
        assert entry.origin.plugin == "datasets" and isinstance(entry.target, str)
        assert entry.description and "\n" not in entry.description


def test_labpics_missing_mask_means_no_pixels(labpics_raw, tmp_path):
    from segcli_datasets.labpics import prepare

    plan = prepare(labpics_raw, val_fraction=0.0)
    report = build_dataset(plan, tmp_path / "out")
    assert report.pairs == {"train": 3, "test": 1}
    masks = masks_of(tmp_path / "out", "train")
    assert set(np.unique(masks["a"])) == {0, 1, 2}  # filled wins over vessel
    assert set(np.unique(masks["b"])) == {0, 1}  # its 16_Filled mask is missing
    assert any("1 images have no 16_Filled mask" in note for note in report.notes)
    assert report.class_share["train"]["filled"] > 0


def test_labpics_stray_value_fails_unless_ignored(labpics_raw, tmp_path):
    from segcli_datasets.labpics import prepare

    bad = np.zeros((24, 32), np.uint8)
    bad[0, 0] = 255
    save(labpics_raw / "Simple" / "Train" / "Semantic" / "1_Vessel" / "c.png", bad)
    with pytest.raises(DataError, match=r"holds values \[255\]; masks must be 0/1"):
        build_dataset(prepare(labpics_raw), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    plan = prepare(labpics_raw, ignore_stray_values=True, val_fraction=0.0)
    report = build_dataset(plan, tmp_path / "out")
    assert report.class_share["train"]["(ignore)"] > 0


def test_isbi_png_layout_maps_two_levels_explicitly(isbi_png_raw, tmp_path):
    from segcli_datasets.isbi2012 import prepare

    report = build_dataset(prepare(isbi_png_raw, val_fraction=0.25), tmp_path / "out")
    assert report.pairs == {"train": 3, "val": 1} and report.unlabelled == {"test": 4}
    assert report.raw_values["train"] == [0, 255] and report.mapped_values["train"] == [0, 1]
    info = read_dataset_info(tmp_path / "out")
    assert info.class_names == ["membrane", "cell"] and info.image_channels == 1
    original = np.asarray(Image.open(isbi_png_raw / "train" / "label" / "0.png"))
    written = next(
        m
        for s, m in [
            *masks_of(tmp_path / "out", "train").items(),
            *masks_of(tmp_path / "out", "val").items(),
        ]
        if s == "0"
    )
    assert np.array_equal(written, (original == 255).astype(np.uint8))


def test_isbi_tiff_volumes(isbi_tif_raw, tmp_path):
    from segcli_datasets.isbi2012 import prepare

    report = build_dataset(prepare(isbi_tif_raw, val_fraction=0.0), tmp_path / "out")
    assert report.pairs == {"train": 5} and report.unlabelled == {"test": 5}
    with Image.open(isbi_tif_raw / "train-volume.tif") as volume:
        volume.seek(3)
        page = np.asarray(volume)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out/train/images/03.png")), page)
    record = next(r for r in samples_of(tmp_path / "out") if r["stem"] == "03" and r["mask"])
    assert record["meta"] == {"volume": str(isbi_tif_raw / "train-volume.tif"), "page": 3}


def test_isbi_refuses_labels_with_more_than_two_levels(isbi_png_raw):
    from segcli_datasets.isbi2012 import prepare

    ramp = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    save(isbi_png_raw / "train" / "label" / "0.png", ramp)
    with pytest.raises(DataError, match="expected two"):
        prepare(isbi_png_raw)


@pytest.mark.parametrize("void_class", [False, True])
def test_idd_lite_void(idd_raw, tmp_path, void_class):
    from segcli_datasets.idd_lite import prepare

    report = build_dataset(prepare(idd_raw, void_class=void_class), tmp_path / "out")
    assert report.pairs == {"train": 3, "val": 2} and report.unlabelled == {"test": 2}
    assert report.raw_values["train"] == [0, 1, 2, 3, 4, 5, 6, 255]
    expected = [0, 1, 2, 3, 4, 5, 6, 7] if void_class else [0, 1, 2, 3, 4, 5, 6, 255]
    assert report.mapped_values["train"] == expected
    assert len(read_dataset_info(tmp_path / "out").classes) == (8 if void_class else 7)
    assert all(r["source_image"].endswith("_image.jpg") for r in samples_of(tmp_path / "out"))


@pytest.mark.parametrize("mask_source", ["png", "rle"])
def test_tgs_mask_sources_agree(tgs_raw, tmp_path, mask_source):
    from segcli_datasets.tgs_salt import prepare

    out = tmp_path / mask_source
    report = build_dataset(
        prepare(tgs_raw, mask_source=mask_source, val_fraction=0.2), out, workers=2
    )
    assert report.pairs == {"train": 8, "val": 2} and report.unlabelled == {"test": 2}
    assert "empty masks (no salt, per train.csv): 4 of 10" in report.notes
    for stem, mask in {**masks_of(out, "train"), **masks_of(out, "val")}.items():
        assert np.array_equal(mask, blob(11, 11, int(stem, 16)) * (int(stem, 16) % 3 > 0))
    records = samples_of(out)
    assert {r["meta"]["depth"] for r in records} == {*range(100, 110), 500, 501}
    if mask_source == "png":
        assert report.raw_values["train"] == [0, 255, 65535] or 65535 in report.raw_values["val"]


def test_tgs_validation_split_is_seeded(tgs_raw):
    from segcli_datasets.tgs_salt import prepare

    def val(seed):
        return {
            s.stem
            for s in prepare(tgs_raw, seed=seed, val_fraction=0.3).samples
            if s.split == "val"
        }

    assert val(0) == val(0) and len(val(0)) == 3 and val(0) != val(1)
    with pytest.raises(UsageError, match="--val-fraction"):
        prepare(tgs_raw, val_fraction=1.5)


def test_tgs_bad_run_length(tgs_raw, tmp_path):
    from segcli_datasets.tgs_salt import prepare

    table = tgs_raw / "train.csv"
    lines = table.read_text().splitlines()
    stem = lines[1].split(",")[0]
    lines[1] = f"{stem},1 5 9"
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="odd count"):
        build_dataset(prepare(tgs_raw, mask_source="rle"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nyuv2_exact_colour_table(nyuv2_raw, tmp_path):
    from segcli_datasets.nyuv2 import prepare

    report = build_dataset(prepare(nyuv2_raw), tmp_path / "out")
    assert report.pairs == {"train": 3, "val": 1}
    info = read_dataset_info(tmp_path / "out")
    assert info.num_classes == 41 and info.class_names[1] == "wall"
    assert info.class_names[40] == "otherprop"
    expected = (np.arange(16 * 20).reshape(16, 20) % 41).astype(np.uint8)
    assert np.array_equal(masks_of(tmp_path / "out", "val")["0004"], expected)


def test_nyuv2_rejects_colour_not_in_table(nyuv2_raw, tmp_path):
    from segcli_datasets.nyuv2 import prepare

    label = np.zeros((16, 20, 3), np.uint8)
    label[0, 0] = (1, 2, 3)  # the tutorial's hash maps this to the same key as (2, 2, 2)
    save(nyuv2_raw / "Segmentation_40" / "0002.png", label)
    with pytest.raises(DataError, match=r"colours that are not in the class map: \(1, 2, 3\)"):
        build_dataset(prepare(nyuv2_raw), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prepares_and_writes_report(run_cli, tgs_raw, tmp_path):
    code, out, err = run_cli(
        "prepare",
        "tgs-salt",
        tgs_raw,
        "--out",
        tmp_path / "out-tgs",
        "--val-fraction",
        "0.2",
        "--workers",
        "2",
    )
    assert code == 0, err
    assert "salt" in out and "empty masks" in out
    report = json.loads((tmp_path / "out-tgs" / "report.json").read_text())
    assert report["pairs"] == {"train": 8, "val": 2}
    assert (
        json.loads((tmp_path / "out-tgs" / "dataset.json").read_text())["preparer"]["options"][
            "val_fraction"
        ]
        == 0.2
    )


def test_cli_unpaired_files_fail_then_skip(run_cli, idd_raw, tmp_path):
    (next((idd_raw / "idd20k_lite" / "gtFine" / "val").rglob("*.png"))).unlink()
    out = tmp_path / "out-idd"
    code, _, err = run_cli("prepare", "idd-lite", idd_raw, "--out", out)
    assert code == 3 and "1 images without masks" in err and "--skip-unpaired" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    code, _, err = run_cli("prepare", "idd-lite", idd_raw, "--out", out, "--skip-unpaired")
    assert code == 0, err
    assert len(json.loads((out / "report.json").read_text())["unpaired_images"]) == 1


def test_cli_not_a_dataset_folder(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here")
    for name in ("labpics", "isbi2012", "idd-lite", "tgs-salt", "nyuv2"):
        out = tmp_path / f"out-{name}"
        code, _, err = run_cli("prepare", name, tmp_path / "empty", "--out", out)
        assert code == 3, (name, err)
        assert "expected" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
