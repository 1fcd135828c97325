"""`labelme`: shapes, embedded images, groups, file order, sub-folders and malformed files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import noise, save
from segcli_datasets.labelme import prepare

from segcli.data.prepare import build_dataset
from segcli.errors import DataError
from segcli.testing.tools import require_module

require_module("pycocotools")

H, W = 30, 40


def shape(label: str, kind: str, points, **extra) -> dict:
    return {"label": label, "shape_type": kind, "points": points, "group_id": None, **extra}


def document(folder: Path, name: str, shapes: list[dict], image: bool = True, embed=False):
    """`name`.json in `folder`, with its image next to it (or only embedded)."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = noise(H, W, 1)
    if image:
        save(folder / f"{name}.png", pixels)
    data = {"shapes": shapes, "imagePath": f"{name}.png", "imageData": None}
    if embed:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data["imageData"] = base64.b64encode(buffer.getvalue()).decode()
    data.update(imageHeight=H, imageWidth=W)
    (folder / f"{name}.json").write_text(json.dumps(data))
    return pixels


def build(tmp_path: Path, **options):
    options.setdefault("val_fraction", 0.0)
    plan = prepare(tmp_path / "raw", **options)
    return plan, build_dataset(plan, tmp_path / "out", workers=1, force=True)


def mask_of(tmp_path: Path, stem: str = "a", split: str = "train") -> np.ndarray:
    return np.asarray(Image.open(tmp_path / "out" / split / "masks" / f"{stem}.png"))


def test_file_order_is_the_default_draw_order(tmp_path):
    shapes = [
        shape("window", "rectangle", [[10, 10], [20, 20]]),
        shape("wall", "polygon", [[2, 2], [38, 2], [38, 28], [2, 28]]),
    ]
    document(tmp_path / "raw", "a", shapes)
    plan, report = build(tmp_path)
    assert [c.name for c in plan.classes] == ["background", "window", "wall"]
    mask = mask_of(tmp_path)
    assert (mask[2:28, 2:38] == 2).all() and not (mask == 1).any()
    assert report.contested == [{"under": "window", "on_top": "wall", "pixels": 100, "images": 1}]
    build(tmp_path, draw_order="area")
    assert (mask_of(tmp_path)[10:20, 10:20] == 1).all()


def test_rectangle_circle_line_and_point_shapes(tmp_path):
    shapes = [
        shape("box", "rectangle", [[20, 12], [4, 2]]),  # corners in any order
        shape("disc", "circle", [[30, 15], [30, 20]]),  # radius 5
        shape("line", "line", [[2.5, 25.5], [12.5, 25.5]]),
        shape("dot", "point", [[36.5, 3.5]]),
    ]
    document(tmp_path / "raw", "a", shapes)
    build(tmp_path, line_width=3)
    mask = mask_of(tmp_path)
    assert (mask[2:12, 4:20] == 1).all() and (mask == 1).sum() == 160
    assert abs(int((mask == 2).sum()) - round(np.pi * 25)) <= 4 and mask[15, 30] == 2
    line = mask == 3
    # 10 long and 3 wide, with round ends: rows 24-26, not 23 or 27
    assert line[24:27, 3:12].all() and not line[23].any() and not line[27].any()
    assert 30 <= line.sum() <= 40
    assert 5 <= (mask == 4).sum() <= 9 and mask[3, 36] == 4


def test_mask_shape_and_group_id(tmp_path):
    bitmap = np.zeros((4, 6), np.uint8)
    bitmap[1:3, 1:5] = 255
    buffer = io.BytesIO()
    Image.fromarray(bitmap).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    shapes = [
        shape("blob", "mask", [[34, 24], [39, 27]], mask=encoded),
        # two parts of one grouped object, drawn together (in place of the first)
        shape("car", "rectangle", [[0, 0], [5, 5]], group_id=1),
        shape("tree", "rectangle", [[0, 0], [33, 23]]),
        shape("car", "rectangle", [[30, 20], [35, 25]], group_id=1),
    ]
    document(tmp_path / "raw", "a", shapes)
    plan, _ = build(tmp_path)
    mask = mask_of(tmp_path)
    assert (mask == 1).sum() == 8 and (mask[25:27, 35:39] == 1).all()
    # the group is drawn at its first shape's place, so the tree drawn after that first shape
    # covers both of its parts (where it reaches the second)
    assert (mask[0:23, 0:33] == 3).all() and (mask[23:25, 30:35] == 2).all()


def test_embedded_image_data_when_the_file_is_missing(tmp_path):
    pixels = document(
        tmp_path / "raw", "a", [shape("x", "rectangle", [[1, 1], [5, 5]])], False, True
    )
    plan, report = build(tmp_path)
    assert "1 image(s) taken from the imageData embedded in their JSON" in plan.notes
    written = np.asarray(Image.open(tmp_path / "out" / "train" / "images" / "a.png"))
    assert np.array_equal(written, pixels)
    assert report.pairs == {"train": 1}


def test_sub_folders_and_split_folders(tmp_path):
    rectangle = [shape("x", "rectangle", [[1, 1], [5, 5]])]
    document(tmp_path / "raw" / "train" / "day", "a", rectangle)
    document(tmp_path / "raw" / "val", "b", rectangle)
    _, report = build(tmp_path)
    assert report.pairs == {"train": 1, "val": 1}


def test_classes_file_renames_and_merges_labels(tmp_path):
    shapes = [
        shape("gocuk", "rectangle", [[0, 0], [5, 5]]),
        shape("dent", "rectangle", [[10, 10], [15, 15]]),
        shape("other", "rectangle", [[20, 20], [25, 25]]),
    ]
    document(tmp_path / "raw", "a", shapes)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"names": ["background", "dent"], "map": {"gocuk": "dent"}}))
    plan, _ = build(tmp_path, classes=classes, others="ignore")
    assert [c.name for c in plan.classes] == ["background", "dent"]
    mask = mask_of(tmp_path)
    assert mask[2, 2] == 1 and mask[12, 12] == 1 and mask[22, 22] == 255


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"images": []}, r"a\.json is not a labelme file"),
        ({"shapes": [{"points": [[1, 1]]}]}, r"a\.json#shape 0 has no label"),
        (
            {"shapes": [shape("x", "polygon", [[1, 1], [float("nan"), 2], [3, 3]])]},
            r"a\.json#shape 0: a point is not a finite number",
        ),
    ],
)
def test_malformed_files_are_one_data_error(tmp_path, run_cli, content, message):
    (tmp_path / "raw").mkdir()
    save(tmp_path / "raw" / "a.png", noise(H, W, 1))
    content = {"imagePath": "a.png", "imageHeight": H, "imageWidth": W, **content}
    (tmp_path / "raw" / "a.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "raw")
    code, _, err = run_cli("prepare", "labelme", tmp_path / "raw", "--out", tmp_path / "out")
    assert code == 3 and err.count("error:") == 1
    assert not (tmp_path / "out").exists()
