"""`coco`: small generated exports in each layout, every overlap and malformed case."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import noise, save
from segcli_datasets.coco import prepare

from segcli.data.annotations import Region, rasterise
from segcli.data.prepare import build_dataset
from segcli.errors import DataError
from segcli.testing.tools import require_module

pycocotools_mask = require_module("pycocotools.mask")

CARDAMAGE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cardamage-coco"
H, W = 40, 48
BIG = [4, 4, 44, 4, 44, 36, 4, 36]  # 40x32 = 1280 pixels
SMALL = [10, 10, 20, 10, 20, 20, 10, 20]  # 10x10 = 100 pixels, inside BIG


def export(
    folder: Path,
    annotations: list[dict],
    categories=None,
    images=None,
    name: str = "_annotations.coco.json",
) -> Path:
    """A COCO file in `folder` with one 40x48 image `img0.jpg` (and its file) unless given."""
    images = images if images is not None else [{"id": 1, "file_name": "img0.jpg"}]
    for image in images:
        image.setdefault("height", H)
        image.setdefault("width", W)
        target = folder / image["file_name"]
        if not target.exists() and not image.pop("no_file", False):
            save(target.with_suffix(".png") if target.suffix == ".png" else target, noise(H, W, 0))
    categories = categories or [{"id": 1, "name": "wall"}, {"id": 2, "name": "window"}]
    for index, annotation in enumerate(annotations):
        annotation.setdefault("id", index + 1)
        annotation.setdefault("image_id", 1)
        annotation.setdefault("iscrowd", 0)
    data = {"images": images, "annotations": annotations, "categories": categories}
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def polygon(points, category=1, **extra) -> dict:
    return {"category_id": category, "segmentation": [points], **extra}


def build(tmp_path: Path, raw: Path, **options):
    plan = prepare(raw, **options)
    return plan, build_dataset(plan, tmp_path / "out", workers=1, force=True)


def mask_of(tmp_path: Path, stem: str = "img0", split: str = "train") -> np.ndarray:
    return np.asarray(Image.open(tmp_path / "out" / split / "masks" / f"{stem}.png"))


def box(x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_area_order_puts_the_smaller_region_on_top(tmp_path):
    # the window comes first in the file: file order would bury it under the wall
    export(tmp_path / "raw", [polygon(SMALL, 2), polygon(BIG, 1)])
    plan, report = build(tmp_path, tmp_path / "raw", val_fraction=0.0)
    mask = mask_of(tmp_path)
    assert [c.name for c in plan.classes] == ["background", "wall", "window"]
    expected = np.where(box(10, 10, 20, 20), 2, np.where(box(4, 4, 44, 36), 1, 0))
    assert np.array_equal(mask, expected)
    assert report.contested == [{"under": "wall", "on_top": "window", "pixels": 100, "images": 1}]


def test_annotation_order_draws_the_last_on_top(tmp_path):
    export(tmp_path / "raw", [polygon(SMALL, 2), polygon(BIG, 1)])
    _, report = build(tmp_path, tmp_path / "raw", val_fraction=0.0, draw_order="annotation")
    assert np.array_equal(mask_of(tmp_path), np.where(box(4, 4, 44, 36), 1, 0))
    assert report.contested[0]["under"] == "window" and report.contested[0]["pixels"] == 100


def test_classes_order_follows_the_classes_file(tmp_path):
    export(tmp_path / "raw", [polygon(BIG, 1), polygon(SMALL, 2)])
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"names": ["background", "window", "wall"]}))
    plan, _ = build(
        tmp_path, tmp_path / "raw", val_fraction=0.0, draw_order="classes", classes=classes
    )
    assert [c.name for c in plan.classes] == ["background", "window", "wall"]
    # wall is listed last, so it is drawn last and covers the window
    assert np.array_equal(mask_of(tmp_path), np.where(box(4, 4, 44, 36), 2, 0))


def test_crowd_regions_become_ignore_class_or_nothing(tmp_path):
    export(tmp_path / "raw", [polygon(BIG, 1), polygon(SMALL, 2, iscrowd=1)])
    build(tmp_path, tmp_path / "raw", val_fraction=0.0)
    assert (mask_of(tmp_path)[box(10, 10, 20, 20)] == 255).all()
    build(tmp_path, tmp_path / "raw", val_fraction=0.0, crowd="class")
    assert (mask_of(tmp_path)[box(10, 10, 20, 20)] == 2).all()
    plan, _ = build(tmp_path, tmp_path / "raw", val_fraction=0.0, crowd="skip")
    assert (mask_of(tmp_path)[box(10, 10, 20, 20)] == 1).all()
    # window is used only by the crowd region: no class for it
    assert [c.name for c in plan.classes] == ["background", "wall"]


def test_compressed_and_uncompressed_rle_round_trip_pycocotools(tmp_path):
    rng = np.random.default_rng(3)
    truth = np.asfortranarray((rng.random((H, W)) > 0.6).astype(np.uint8))
    compressed = pycocotools_mask.encode(truth)
    compressed["counts"] = compressed["counts"].decode()
    counts, value = [0], 0  # runs of 0, 1, 0, ... column by column, as COCO writes them
    for pixel in truth.ravel(order="F"):
        if pixel != value:
            counts.append(0)
            value = pixel
        counts[-1] += 1
    annotations = [
        {"category_id": 1, "segmentation": compressed},
        {"category_id": 2, "segmentation": {"size": [H, W], "counts": counts}, "image_id": 2},
    ]
    images = [{"id": 1, "file_name": "img0.jpg"}, {"id": 2, "file_name": "img1.jpg"}]
    export(tmp_path / "raw", annotations, images=images)
    build(tmp_path, tmp_path / "raw", val_fraction=0.0)
    assert np.array_equal(mask_of(tmp_path, "img0"), truth * 1)
    assert np.array_equal(mask_of(tmp_path, "img1"), truth * 2)


def test_roboflow_splits_unused_parent_and_background_images(tmp_path):
    raw = tmp_path / "raw"
    parent = [{"id": 0, "name": "car"}, {"id": 1, "name": "dent"}, {"id": 2, "name": "scratch"}]
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    export(raw / "valid", [polygon(BIG, 1)], parent, images)
    export(raw / "test", [polygon(SMALL, 2)], parent, [{"id": 1, "file_name": "c.jpg"}])
    plan, report = build(tmp_path, raw)
    assert report.pairs == {"val": 2, "test": 1}
    assert [c.name for c in plan.classes] == ["background", "dent", "scratch"]
    assert "category 'car' used by no annotation: dropped" in plan.notes
    assert any("1 image(s) without annotations" in n and "b" in n for n in plan.notes)
    assert not mask_of(tmp_path, "b", "val").any()
    plan, report = build(tmp_path, raw, val_fraction=0.5)
    assert report.pairs == {"train": 1, "val": 1, "test": 1}


def test_duplicate_category_names_merge(tmp_path):
    categories = [
        {"id": 1, "name": "dent"},
        {"id": 2, "name": "scratch"},
        {"id": 3, "name": "dent"},
    ]
    export(tmp_path / "raw", [polygon(BIG, 3), polygon(SMALL, 1)], categories)
    plan, _ = build(tmp_path, tmp_path / "raw", val_fraction=0.0)
    assert [c.name for c in plan.classes] == ["background", "dent"]
    assert "'dent' listed twice: merged" in plan.notes
    assert set(np.unique(mask_of(tmp_path))) == {0, 1}


def test_images_in_an_unnamed_sub_folder_and_coco_layout(tmp_path):
    raw = tmp_path / "raw"
    save(raw / "train2017" / "batch_1" / "img0.jpg", noise(H, W, 0))
    export(
        raw / "annotations",
        [polygon(BIG)],
        images=[{"id": 1, "file_name": "img0.jpg", "no_file": True}],
        name="instances_train2017.json",
    )
    plan, report = build(tmp_path, raw, val_fraction=0.0)
    assert report.pairs == {"train": 1}
    assert plan.samples[0].image == raw / "train2017" / "batch_1" / "img0.jpg"


def test_an_ambiguous_image_name_lists_the_candidates(tmp_path):
    raw = tmp_path / "raw"
    for folder in ("x", "y"):
        save(raw / "images" / folder / "img0.jpg", noise(H, W, 0))
    export(raw, [polygon(BIG)], images=[{"id": 1, "file_name": "img0.jpg", "no_file": True}])
    with pytest.raises(DataError, match=r"2 images are named 'img0.jpg'.*x/img0.jpg"):
        prepare(raw)


def test_missing_images_are_reported_and_skipped_on_request(tmp_path):
    raw = tmp_path / "raw"
    images = [
        {"id": 1, "file_name": "img0.jpg"},
        {"id": 2, "file_name": "gone.jpg", "no_file": True},
    ]
    export(raw, [polygon(BIG)], images=images)
    plan = prepare(raw, val_fraction=0.0)
    assert plan.unpaired_masks == [
        "_annotations.coco.json#image 2 (gone.jpg): image file not found"
    ]
    with pytest.raises(DataError, match="gone.jpg"):
        build_dataset(plan, tmp_path / "out")
    report = build_dataset(prepare(raw, val_fraction=0.0), tmp_path / "out", skip_unpaired=True)
    assert report.pairs == {"train": 1}


def test_degenerate_polygons_are_noted_skipped_or_clipped(tmp_path):
    annotations = [
        polygon([5, 5, 30, 5], id=7),  # two points
        polygon([5, 5, 10, 10, 15, 15], id=8),  # on one line: zero area
        polygon([-10, -10, 20, -10, 20, 20, -10, 20], id=9),  # reaches outside: clipped
    ]
    export(tmp_path / "raw", annotations)
    plan, _ = build(tmp_path, tmp_path / "raw", val_fraction=0.0)
    notes = "\n".join(plan.notes)
    assert (
        "1 polygon(s) with fewer than 3 points: skipped: _annotations.coco.json#annotation 7"
        in notes
    )
    assert "1 polygon(s) with zero area: skipped: _annotations.coco.json#annotation 8" in notes
    assert "points outside the image: clipped: _annotations.coco.json#annotation 9" in notes
    assert np.array_equal(mask_of(tmp_path), box(0, 0, 20, 20).astype(np.uint8))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("annotations"), r"not a COCO instance file: no 'annotations' list"),
        (lambda d: d["annotations"][0].update(image_id=99), r"#annotation 1 points at image 99"),
        (lambda d: d["annotations"][0].update(category_id=9), r"#annotation 1 has category 9"),
        (
            lambda d: d["annotations"][0]["segmentation"][0].__setitem__(2, float("nan")),
            r"#annotation 1: a point is not a finite number",
        ),
        (
            lambda d: d["annotations"][0].update(segmentation={"size": [H, W], "counts": [5]}),
            r"#annotation 1: RLE counts add up to 5 pixels",
        ),
    ],
)
def test_malformed_input_is_one_data_error_naming_file_and_annotation(
    tmp_path, run_cli, change, message
):
    path = export(tmp_path / "raw", [polygon(BIG)])
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # NaN is written as JSON's NaN, which Python reads
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "raw")
    code, out, err = run_cli("prepare", "coco", tmp_path / "raw", "--out", tmp_path / "out")
    assert code == 3
    assert err.count("error:") == 1 and "_annotations.coco.json" in err
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_the_contested_table(tmp_path, run_cli):
    export(tmp_path / "raw", [polygon(BIG, 1), polygon(SMALL, 2)])
    code, out, err = run_cli(
        "prepare", "coco", tmp_path / "raw", "--out", tmp_path / "out", "--val-fraction", "0"
    )
    assert code == 0, err
    assert "contested pixels" in out
    assert "wall" in out.split("contested pixels")[1] and "100" in out.split("contested")[1]


def test_rasterise_counts_each_pixel_once_per_class_pair():
    def fill(x0, x1):
        def draw(mask, value):
            mask[:, x0:x1] = value

        return draw

    regions = [
        Region(1, 30.0, 0, fill(0, 6), "a"),
        Region(1, 20.0, 1, fill(2, 6), "b"),  # same class, overlapping the first
        Region(2, 10.0, 2, fill(4, 6), "c"),
    ]
    mask, contested = rasterise(2, 8, regions, "area")
    assert mask[0].tolist() == [1, 1, 1, 1, 2, 2, 0, 0]
    assert contested == {(1, 2): 4}


@pytest.mark.skipif(not CARDAMAGE.is_dir(), reason="../shared/data is absent")
def test_realdata_cardamage(tmp_path):
    plan = prepare(CARDAMAGE)
    splits: dict[str, int] = {}
    for sample in plan.samples:
        splits[sample.split] = splits.get(sample.split, 0) + 1
    # the Roboflow export has valid/ and test/ only: no train folder
    assert splits == {"val": 492, "test": 490}
    assert [c.name for c in plan.classes][0] == "background" and len(plan.classes) == 9
    assert "category 'car' used by no annotation: dropped" in plan.notes
    # a few images written (the whole set takes a minute or more): polygons drawn, overlaps counted
    plan.samples = [s for s in plan.samples if s.split == "val"][:12]
    report = build_dataset(plan, tmp_path / "out", workers=1)
    assert report.pairs == {"val": 12}
    assert report.mapped_values["val"][0] == 0 and len(report.mapped_values["val"]) > 2


def test_polygons_drawn_in_their_box_match_a_whole_image_decode():
    # the rasteriser decodes each region inside its bounding box only: the pixels must be
    # exactly pycocotools' whole-image ones, also for polygons that leave the image
    from pycocotools import mask as coco_mask

    from segcli.data.annotations import polygon_region

    rng = np.random.default_rng(7)
    height, width = 37, 53
    for _ in range(200):
        count = int(rng.integers(3, 9))
        centre = rng.uniform([-10, -10], [width + 10, height + 10])
        points = centre + rng.uniform(-15, 15, (count, 2))
        flat = points.ravel().tolist()
        drawn = np.zeros((height, width), np.uint8)
        polygon_region([flat], 1, 0, "test", height, width).draw(drawn, 1)
        rle = coco_mask.merge(coco_mask.frPyObjects([flat], height, width))
        with warnings.catch_warnings():  # pycocotools' NumPy 2 deprecation, harmless
            warnings.simplefilter("ignore", DeprecationWarning)
            whole = coco_mask.decode(rle)
        assert np.array_equal(drawn, whole), flat
