"""`segcli prepare cityscapes` on a small generated Cityscapes layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import noise, save

from segcli.data.format import read_dataset_info
from segcli.data.prepare import build_dataset
from segcli.errors import DataError

TRAIN_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip
# every label id 0..33 with its train id (the official table)
TRAIN_IDS = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2,
    12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def label_ids(seed: int) -> np.ndarray:
    """A 17x34 labelIds image: row r holds label id (r*2 + column + seed) % 34, every id used."""
    rows, columns = np.mgrid[:17, :34]
    return ((rows * 2 + columns + seed) % 34).astype(np.uint8)


def make_cityscapes(root: Path) -> dict[str, np.ndarray]:
    labels = {}
    frames = {"train": [("aachen", 0), ("aachen", 1), ("bremen", 2)], "val": [("lindau", 3)]}
    frames["test"] = [("berlin", 4)]
    for split, found in frames.items():
        for city, index in found:
            stem = f"{city}_{index:06d}_000019"
            save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                 noise(17, 34, index))  # fmt: skip
            if split != "test":
                labels[stem] = label_ids(index)
                gt = root / "gtFine" / split / city
                save(gt / f"{stem}_gtFine_labelIds.png", labels[stem])
                save(gt / f"{stem}_gtFine_color.png", noise(17, 34, 50 + index))  # ignored
    return labels


def masks_of(out: Path, split: str) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / split / "masks").glob("*"))}


def test_label_ids_mapped_to_the_19_train_ids(tmp_path):
    from segcli_datasets.cityscapes import prepare

    labels = make_cityscapes(tmp_path / "raw")
    out = tmp_path / "out"
    build_dataset(prepare(tmp_path / "raw"), out)
    info = read_dataset_info(out)
    assert [c.name for c in info.classes] == TRAIN_NAMES
    assert info.classes[0].color == (128, 64, 128) and info.classes[18].color == (119, 11, 32)
    assert info.splits == {"test": 1, "train": 3, "val": 1}
    assert info.labelled_splits == ["train", "val"]
    lookup = np.array([TRAIN_IDS[i] for i in range(34)], np.uint8)
    written = {**masks_of(out, "train"), **masks_of(out, "val")}
    assert written.keys() == labels.keys()
    for stem, raw in labels.items():
        np.testing.assert_array_equal(written[stem], lookup[raw])
    assert info.ignore_pixels["train"] > 0  # parking, guard rail, void ... -> 255


def test_label_ids_option_keeps_all_34(tmp_path):
    from segcli_datasets.cityscapes import prepare

    labels = make_cityscapes(tmp_path / "raw")
    out = tmp_path / "out"
    build_dataset(prepare(tmp_path / "raw", label_ids=True, include_test=False), out)
    info = read_dataset_info(out)
    assert len(info.classes) == 34
    assert (info.classes[9].name, info.classes[26].name) == ("parking", "car")
    assert "test" not in info.splits
    written = masks_of(out, "train")
    np.testing.assert_array_equal(written["bremen_000002_000019"], labels["bremen_000002_000019"])


def test_missing_label_is_unpaired_and_stray_values_reported(tmp_path):
    from segcli_datasets.cityscapes import prepare

    make_cityscapes(tmp_path / "raw")
    gt = tmp_path / "raw" / "gtFine" / "train" / "aachen"
    (gt / "aachen_000001_000019_gtFine_labelIds.png").unlink()
    plan = prepare(tmp_path / "raw")
    assert [Path(p).name for p in plan.unpaired_images] == ["aachen_000001_000019_leftImg8bit.png"]
    stray = label_ids(0)
    stray[0, 0] = 40
    save(gt / "aachen_000000_000019_gtFine_labelIds.png", stray)
    with pytest.raises(DataError, match=r"values \[40\]"):
        build_dataset(prepare(tmp_path / "raw"), tmp_path / "out", skip_unpaired=True)


def test_not_a_cityscapes_folder(tmp_path):
    from segcli_datasets.cityscapes import prepare

    (tmp_path / "raw" / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(DataError, match="no gtFine"):
        prepare(tmp_path / "raw")
    with pytest.raises(DataError, match="not a Cityscapes folder"):
        prepare(tmp_path / "raw" / "leftImg8bit")


def test_cli_prepare_cityscapes(run_cli, tmp_path):
    make_cityscapes(tmp_path / "cityscapes-raw" / "cityscapes")
    code, out, err = run_cli(
        "prepare", "cityscapes", tmp_path / "cityscapes-raw", "--out", tmp_path / "ds"
    )
    assert code == 0, err
    assert "19 training classes" in out
