"""`segcli prepare voc` on small generated VOC and CVAT "Segmentation mask 1.1" exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import noise, save

from segcli.data.format import read_dataset_info
from segcli.data.prepare import build_dataset
from segcli.errors import DataError

VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car"]


def voc_palette() -> list[int]:
    from segcli_datasets.common import distinct_colors

    return [v for color in distinct_colors(256) for v in color]


def label_map(seed: int, values: list[int]) -> np.ndarray:
    """A 24x32 mask: background, a block of values[0], one of values[1], a 255 border."""
    mask = np.zeros((24, 32), np.uint8)
    mask[2:10, 2:14] = values[0]
    mask[12:22, 16:30] = values[1 % len(values)]
    mask[1, :] = 255  # VOC's object border
    mask[:, 15] = 255
    mask[seed % 20 + 2, 0] = values[0]
    return mask


def save_palette(path: Path, mask: np.ndarray, palette: list[int]) -> None:
    image = Image.fromarray(mask, mode="P")
    image.putpalette(palette)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_voc(
    root: Path,
    names: list[str],
    *,
    masks_dir: str = "SegmentationClass",
    lists: dict[str, list[str]] | None = None,
    palette: list[int] | None = None,
) -> dict[str, np.ndarray]:
    """JPEGImages/<name>.jpg + <masks_dir>/<name>.png palette masks (+ ImageSets lists)."""
    masks = {}
    for index, name in enumerate(names):
        save(root / "JPEGImages" / f"{name}.jpg", noise(24, 32, index))
        mask = label_map(index, [index % 7 + 1, (index + 3) % 7 + 1])
        save_palette(root / masks_dir / f"{name}.png", mask, palette or voc_palette())
        masks[name] = mask
    for split, stems in (lists or {}).items():
        path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{stem}\n" for stem in stems))
    return masks


def masks_of(out: Path, split: str) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / split / "masks").glob("*"))}


def test_voc_palette_borders_ignored_and_default_names(tmp_path):
    from segcli_datasets.voc import prepare

    raw = tmp_path / "VOCdevkit" / "VOC2012"
    names = [f"2007_00000{i}" for i in range(5)]
    masks = make_voc(raw, names, lists={"train": names[:3], "val": names[3:]})
    out = tmp_path / "out"
    build_dataset(prepare(tmp_path), out)
    info = read_dataset_info(out)
    assert [c.name for c in info.classes][: len(VOC_NAMES)] == VOC_NAMES
    assert len(info.classes) == 21 and info.classes[1].color == (128, 0, 0)
    written = {**masks_of(out, "train"), **masks_of(out, "val")}
    for name, mask in masks.items():
        np.testing.assert_array_equal(written[name], mask)  # 255 borders kept as ignore
    assert info.ignore_pixels["train"] > 0


def test_voc_imagesets_decide_the_splits(tmp_path):
    from segcli_datasets.voc import prepare

    names = [f"img{i}" for i in range(6)]
    make_voc(tmp_path / "raw", names, lists={"train": names[:4], "val": names[4:5]})
    (tmp_path / "raw" / "ImageSets" / "Segmentation" / "trainval.txt").write_text("img0\nimg4\n")
    plan = prepare(tmp_path / "raw")
    splits = {s.stem: s.split for s in plan.samples}
    assert splits == {"img0": "train", "img1": "train", "img2": "train", "img3": "train",
                      "img4": "val"}  # fmt: skip
    assert any("1 masks are in no split list" in note for note in plan.notes)
    assert any("trainval.txt not used" in note for note in plan.notes)


def test_voc_name_in_two_split_lists_refused(tmp_path):
    from segcli_datasets.voc import prepare

    names = ["a", "b", "c"]
    make_voc(tmp_path / "raw", names, lists={"train": names, "val": ["c"]})
    with pytest.raises(DataError, match=r"'c' is listed in both .*train.txt and .*val.txt"):
        prepare(tmp_path / "raw")


def test_voc_without_imagesets_val_fraction_applies(tmp_path):
    from segcli_datasets.voc import prepare

    names = [f"img{i}" for i in range(10)]
    make_voc(tmp_path / "raw", names)
    save(tmp_path / "raw" / "JPEGImages" / "detection_only.jpg", noise(24, 32, 99))
    plan = prepare(tmp_path / "raw", val_fraction=0.3, seed=1)
    assert sorted(s.split for s in plan.samples).count("val") == 3
    assert "detection_only" not in {s.stem for s in plan.samples}
    assert not plan.unpaired_images
    assert any("validation split: 3" in note for note in plan.notes)


def test_voc_renamed_folders(tmp_path):
    from segcli_datasets.voc import prepare

    raw = tmp_path / "raw"
    masks = make_voc(raw, ["a", "b", "c"], masks_dir="Labels")
    (raw / "JPEGImages").rename(raw / "Photos")
    with pytest.raises(DataError, match="no JPEGImages"):
        prepare(raw)
    plan = prepare(raw, images_dir="Photos", masks_dir="Labels", val_fraction=0)
    build_dataset(plan, tmp_path / "out")
    np.testing.assert_array_equal(masks_of(tmp_path / "out", "train")["b"], masks["b"])


def test_voc_segmentation_class_png_found_without_options(tmp_path):
    from segcli_datasets.voc import prepare

    make_voc(tmp_path / "raw", ["a", "b"], masks_dir="SegmentationClassPNG")
    plan = prepare(tmp_path / "raw")
    assert {s.mask.parent.name for s in plan.samples} == {"SegmentationClassPNG"}


LABELMAP = """# label:color_rgb:parts:actions
background:0,0,0::
scratch:250,50,83::
dent:51,221,255::
glass shatter:245,147,49::
"""


def make_cvat(root: Path, masks: list[np.ndarray], *, labelmap: str = LABELMAP) -> None:
    """CVAT's Segmentation mask 1.1: RGB colour masks, labelmap.txt, ImageSets/default.txt."""
    colors = {0: (0, 0, 0), 1: (250, 50, 83), 2: (51, 221, 255), 3: (245, 147, 49)}
    for index, mask in enumerate(masks):
        rgb = np.zeros((*mask.shape, 3), np.uint8)
        for value, color in colors.items():
            rgb[mask == value] = color
        save(root / "JPEGImages" / f"frame_{index}.jpg", noise(*mask.shape, index))
        save(root / "SegmentationClass" / f"frame_{index}.png", rgb)
    (root / "labelmap.txt").write_text(labelmap)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "default.txt").write_text("".join(f"frame_{i}\n" for i in range(len(masks))))


def cvat_masks(count: int = 3) -> list[np.ndarray]:
    masks = []
    for index in range(count):
        mask = np.zeros((24, 32), np.uint8)
        mask[2:10, 2:14] = 1
        mask[12:22, 16:30] = 2 + index % 2
        masks.append(mask)
    return masks


def test_cvat_colour_masks_through_labelmap(tmp_path):
    from segcli_datasets.voc import prepare

    masks = cvat_masks()
    make_cvat(tmp_path / "raw", masks)
    plan = prepare(tmp_path / "raw", val_fraction=0)
    build_dataset(plan, tmp_path / "out")
    info = read_dataset_info(tmp_path / "out")
    assert [(c.name, c.color) for c in info.classes] == [
        ("background", (0, 0, 0)),
        ("scratch", (250, 50, 83)),
        ("dent", (51, 221, 255)),
        ("glass shatter", (245, 147, 49)),
    ]
    written = masks_of(tmp_path / "out", "train")
    for index, mask in enumerate(masks):
        np.testing.assert_array_equal(written[f"frame_{index}"], mask)
    assert any("default.txt go to train" in note for note in plan.notes)


def test_labelmap_background_not_first_and_duplicate_name_merged(tmp_path):
    from segcli_datasets.voc import prepare

    labelmap = "dent:51,221,255::\nbackground:0,0,0::\nscratch:250,50,83::\n"
    labelmap += "dent:245,147,49::\n"  # a second colour for dent: merged
    masks = cvat_masks(2)
    make_cvat(tmp_path / "raw", masks, labelmap=labelmap)
    plan = prepare(tmp_path / "raw", val_fraction=0)
    assert [c.name for c in plan.classes] == ["background", "dent", "scratch"]
    build_dataset(plan, tmp_path / "out")
    written = masks_of(tmp_path / "out", "train")
    expected = np.choose(masks[1], [0, 2, 1, 1]).astype(np.uint8)  # 3 (second dent) -> dent
    np.testing.assert_array_equal(written["frame_1"], expected)
    assert any("'dent' listed twice: merged" in note for note in plan.notes)


def test_unknown_colour_names_file_colour_and_nearest(tmp_path):
    from segcli_datasets.voc import prepare

    make_cvat(tmp_path / "raw", cvat_masks(2))
    bad = tmp_path / "raw" / "SegmentationClass" / "frame_1.png"
    rgb = np.asarray(Image.open(bad)).copy()
    rgb[0, 0] = (52, 220, 250)  # anti-aliased dent
    save(bad, rgb)
    with pytest.raises(DataError) as caught:
        build_dataset(prepare(tmp_path / "raw", val_fraction=0), tmp_path / "out")
    message = str(caught.value)
    assert "frame_1.png" in message and "(52, 220, 250)" in message
    assert "nearest: 'dent' (51, 221, 255)" in message
    assert not (tmp_path / "out").exists()
    plan = prepare(tmp_path / "raw", val_fraction=0, ignore_stray_values=True)
    build_dataset(plan, tmp_path / "out")
    assert masks_of(tmp_path / "out", "train")["frame_1"][0, 0] == 255


def test_palette_masks_with_labelmap_read_by_colour(tmp_path):
    """A palette whose order differs from the labelmap's: colours decide, 255 stays ignore."""
    from segcli_datasets.voc import prepare

    raw = tmp_path / "raw"
    palette = [0, 0, 0, 51, 221, 255, 250, 50, 83] + [0] * (3 * 252) + [224, 224, 192]
    mask = np.zeros((24, 32), np.uint8)
    mask[2:10, 2:14] = 1  # dent in the palette, class 2 in the labelmap
    mask[12:22, 16:30] = 2  # scratch
    mask[0, :] = 255
    save(raw / "JPEGImages" / "a.jpg", noise(24, 32, 0))
    save_palette(raw / "SegmentationClass" / "a.png", mask, palette)
    (raw / "labelmap.txt").write_text(LABELMAP)
    build_dataset(prepare(raw, val_fraction=0), tmp_path / "out")
    written = masks_of(tmp_path / "out", "train")["a"]
    np.testing.assert_array_equal(
        written, np.choose(mask.clip(0, 3), [0, 2, 1, 0]) | (mask == 255) * 255
    )


def test_classes_file_renames_and_merges_voc_names(tmp_path):
    from segcli_datasets.voc import prepare

    make_voc(tmp_path / "raw", ["a", "b", "c"])
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"names": ["bg", "vehicle"], "map": {"car": "vehicle",
                                   "bus": "vehicle", "background": "bg"}}))  # fmt: skip
    plan = prepare(tmp_path / "raw", classes=classes, others="ignore", val_fraction=0)
    assert [c.name for c in plan.classes] == ["bg", "vehicle"]
    assert plan.value_map[6] == plan.value_map[7] == 1  # bus, car
    assert plan.value_map[1] == 255 and plan.value_map[0] == 0
    assert plan.value_map[255] == 255


def test_classes_file_names_the_values_of_a_foreign_palette(tmp_path):
    from segcli_datasets.voc import prepare

    palette = [v for i in range(256) for v in (i, 255 - i, 7)]
    make_voc(tmp_path / "raw", ["a", "b"], palette=palette)
    plan = prepare(tmp_path / "raw", val_fraction=0)
    assert plan.classes[1].name == "class_1"
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"names": ["sea", "rock", "sand", "weed", "kelp"]}))
    plan = prepare(tmp_path / "raw", classes=classes, val_fraction=0)
    assert [c.name for c in plan.classes] == ["sea", "rock", "sand", "weed", "kelp"]
    assert plan.value_map[4] == 4 and plan.value_map[5] == 0  # beyond the file -> background


@pytest.mark.parametrize(
    ("labelmap", "message"),
    [
        ("background:0,0,0::\ndent:1,2::\n", "line 2"),
        ("background:0,0,0::\ndent:0,0,0::\n", "has the colour (0, 0, 0) of 'background'"),
        ("# only a comment\n", "names no label"),
    ],
)
def test_bad_labelmap_is_a_data_error_naming_it(tmp_path, labelmap, message):
    from segcli_datasets.voc import prepare

    make_cvat(tmp_path / "raw", cvat_masks(1), labelmap=labelmap)
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        prepare(tmp_path / "raw")
    assert "labelmap.txt" in str(caught.value)


def test_cli_prepare_voc(run_cli, tmp_path):
    names = [f"img{i}" for i in range(4)]
    make_voc(tmp_path / "raw", names, masks_dir="SegClass", lists={"train": names[:3],
             "val": names[3:]})  # fmt: skip
    code, out, err = run_cli(
        "prepare", "voc", tmp_path / "raw", "--masks-dir", "SegClass", "--out", tmp_path / "ds"
    )
    assert code == 0, err
    assert "VOC palette" in out
    assert read_dataset_info(tmp_path / "ds").splits == {"train": 3, "val": 1}


def test_cli_bad_classes_file_exit_2_and_unknown_colour_exit_3(run_cli, tmp_path):
    make_cvat(tmp_path / "raw", cvat_masks(2))
    classes = tmp_path / "classes.json"
    classes.write_text('{"names": ["background", "dent"], "map": {"scratch": "rust"}}')
    out = tmp_path / "ds"
    code, _, err = run_cli("prepare", "voc", tmp_path / "raw", "--classes", classes, "--out", out)
    assert code == 2 and str(classes) in err and "'rust'" in err
    bad = tmp_path / "raw" / "SegmentationClass" / "frame_0.png"
    rgb = np.asarray(Image.open(bad)).copy()
    rgb[3, 3] = (9, 9, 9)
    save(bad, rgb)
    code, _, err = run_cli("prepare", "voc", tmp_path / "raw", "--out", out)
    assert code == 3 and "frame_0.png" in err and "(9, 9, 9)" in err and "nearest" in err
    assert "Traceback" not in err and not out.exists()
